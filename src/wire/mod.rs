//! The HTTP store protocol, defined once: the client ([`crate::store::http`])
//! and the server ([`crate::serve`]) both use this module, so they cannot
//! drift apart. Pure: no sockets here.
//!
//! The base URL is `http://host:port[/prefix]` (a prefix is for reverse proxies
//! that strip it; `vmifs serve` itself answers at `/`). Object key `K` is at
//! `<base>/K`, percent-encoded as needed ([`encoding`]). Keys are the relative
//! paths of [`crate::store::check_key`]: `/`-separated printable ASCII, no
//! empty, `.` or `..` segment.
//!
//! | request | answer |
//! |---|---|
//! | `GET /K` | `200` with the bytes (`Content-Length`, `Last-Modified`, `Accept-Ranges: bytes`) |
//! | `GET /K` + `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` | `206` with `Content-Range: bytes a-b/len`; a range starting at or after the end (or `-0`) → `416` with `Content-Range: bytes */len`; a malformed or multi-range header is ignored (`200`) ([`range`]) |
//! | `HEAD /K` | `200` with `Content-Length` and `Last-Modified` (an HTTP date, [`date`]) |
//! | `PUT /K` + body | `201`; atomic; `413` when the body is too large; `409` if the key collides with a directory, a file or a symlink; `503` + `Retry-After` when too many uploads run; `507` when the store is full |
//! | `DELETE /K` | `204`, also when the object does not exist |
//! | `GET /?list&prefix=P[&after=K][&limit=N]` | `200`, one page `{"entries": [{"key": "...", "size": N, "modified_ms": N}], "next": K}` of the objects whose key starts with `P` and sorts after `K`, in key order; `next` set when more may follow ([`listing`]) |
//! | `GET /` or `GET /D/` | `200`, an HTML index of that directory (one link per entry, directories ending in `/`); `404` if there is none |
//!
//! A missing object is `404`; an invalid key or bad percent-encoding `400`;
//! I/O errors `5xx`; other methods `405`. Clients map 404/410 to `NotFound`,
//! 5xx (but 507), 408 and 429 to `Temporary`, other 4xx and 507 to `Permanent`.

pub mod date;
pub mod encoding;
pub mod listing;
pub mod pem;
pub mod range;
