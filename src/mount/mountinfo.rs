//! `/proc/self/mountinfo`: which mount is at a path, and its device (for the
//! mount's bdi read-ahead). The parser is pure and tested.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub dev: String,
    pub mountpoint: PathBuf,
    pub fstype: String,
}

/// Parse `/proc/self/mountinfo` (mount points have spaces etc. as `\040`).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let sep = f.iter().position(|&x| x == "-")?;
            Some(MountInfo {
                dev: f.get(2)?.to_string(),
                mountpoint: PathBuf::from(unescape(f.get(4)?)),
                fstype: f.get(sep + 1)?.to_string(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The last mount at exactly `path`, if any.
pub fn mount_of(path: &Path) -> Option<MountInfo> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    95 22 0:52 / /var/lib/my\\040vmi rw,nosuid,nodev,relatime shared:50 - fuse.vmifs vmifs ro,user_id=0\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].dev, "0:52");
        assert_eq!(m[1].mountpoint, PathBuf::from("/var/lib/my vmi"));
        assert_eq!(m[1].fstype, "fuse.vmifs");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("end\\04"), "end\\04");
    }
}
