//! Bad input: one clear error line, a non-zero exit, and nothing written.

use std::process::Command;

use crate::harness::BIN;

fn run(args: &[&str], config: Option<&std::path::Path>) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("VMIFS_CONFIG");
    // No cloud credentials from the environment: the missing-credential
    // cases must see none.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("GOOGLE_") || k.starts_with("AZURE_") || k.starts_with("AWS_") {
            cmd.env_remove(&*k);
        }
    }
    cmd.env_remove("SERVICE_ACCOUNT");
    if let Some(c) = config {
        cmd.env("VMIFS_CONFIG", c);
    }
    let o = cmd.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn bad_input_is_one_line_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[[store]]\nname = \"local\"\nurl = \"file://{}\"\n",
            store.display()
        ),
    )
    .unwrap();
    let img = dir.path().join("img.raw");
    std::fs::write(&img, vec![7u8; 100_000]).unwrap();
    let out = dir.path().join("out.raw");
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "[erasure\ndata = 4").unwrap();
    let bad_scheme = dir.path().join("scheme.toml");
    std::fs::write(
        &bad_scheme,
        "[[store]]\nname = \"x\"\nurl = \"ftp://host/x\"\n",
    )
    .unwrap();
    let missing = dir.path().join("nope.toml");
    let cfg = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("[[store]]\nname = \"x\"\n{text}\n")).unwrap();
        p
    };
    let gs_no_bucket = cfg("gs-nobucket.toml", "url = \"gs:///prefix\"");
    let az_no_container = cfg("az-nocontainer.toml", "url = \"az://\"");
    let gs_no_creds = cfg("gs-nocreds.toml", "url = \"gs://bucket/p\"");
    let az_no_creds = cfg("az-nocreds.toml", "url = \"az://container/p\"");
    let az_bad_key = cfg(
        "az-badkey.toml",
        "url = \"az://container/p\"\naccount = \"acct\"\naccess_key = \"not base64 SECRETVALUE!\"",
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&az_bad_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let img_s = img.to_str().unwrap();
    let out_s = out.to_str().unwrap();

    let cases: Vec<(Vec<&str>, Option<&std::path::Path>, &str)> = vec![
        (vec!["ls"], Some(&bad_toml), "line"),
        (vec!["ls"], Some(&bad_scheme), "ftp"),
        (vec!["ls"], Some(&missing), "cannot read config"),
        (vec!["ls"], Some(&gs_no_bucket), "has no bucket"),
        (vec!["ls"], Some(&az_no_container), "has no container"),
        (vec!["ls"], Some(&gs_no_creds), "no GCS credentials"),
        (vec!["ls"], Some(&az_no_creds), "no Azure credentials"),
        (vec!["ls"], Some(&az_bad_key), "store x"),
        (
            vec!["push", img_s, "--name", "a/b"],
            Some(&good),
            "invalid image name",
        ),
        (
            vec!["push", img_s, "--name", ".."],
            Some(&good),
            "invalid image name",
        ),
        (
            vec!["push", img_s, "--name", ""],
            Some(&good),
            "invalid image name",
        ),
        (
            vec!["push", img_s, "--name", "ok", "--tag", "x/y"],
            Some(&good),
            "invalid tag",
        ),
        (
            vec!["push", img_s, "--name", "ok", "--label", "novalue"],
            Some(&good),
            "key=value",
        ),
        (
            vec!["push", "/nonexistent/file.raw", "--name", "ok"],
            Some(&good),
            "no such file",
        ),
        (vec!["get", "missing:1", out_s], Some(&good), "not found"),
        (
            vec!["get", "../x", out_s],
            Some(&good),
            "invalid image name",
        ),
        (vec!["rm", "missing"], Some(&good), "NAME:TAG"),
        (vec!["rm", "missing:1"], Some(&good), "not found"),
        (vec!["search", "noequals"], Some(&good), "key=value"),
    ];
    for (args, cfg, want) in cases {
        let (ok, err) = run(&args, cfg);
        assert!(!ok, "{args:?} should fail");
        let lines: Vec<&str> = err.trim().lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].starts_with("vmifs: error:"), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        assert!(
            !err.contains("SECRETVALUE"),
            "{args:?}: secret shown: {err}"
        );
    }
    assert!(!out.exists());
    // Nothing was published by the failed pushes.
    let (_, listing) = run(&["ls"], Some(&good));
    assert!(!listing.contains("ok"));
}
