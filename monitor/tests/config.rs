//! Configuration errors: each names the file, the line and the key, and exits 2.
mod common;

use std::fs;
use std::process::Command;

use common::{Fixture, run};

fn config_check(text: &str) -> common::Run {
    let f = Fixture::new();
    let text = text.replace("TREE", f.tree.to_str().unwrap());
    fs::write(&f.config, text).unwrap();
    let r = f.fimd(&["config", "check"]);
    // Keep the fixture alive until the run is over.
    drop(f);
    r
}

#[test]
fn every_error_names_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"TREE\"\nbogus = 1\n",
            ":4: unknown field `bogus`",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = [\"TREE\"]\n",
            ":3: invalid type",
        ),
        (
            "state_dir = \"s\"\n[[watch]]\npath = \"TREE\"\n",
            ":1: state_dir: \"s\" is relative",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"TREE/sub\"\npolicy = \"append-only\"\n[[watch]]\npath = \"TREE\"\n",
            ":6: watch.path",
        ),
        (
            "state_dir = \"/s\"\n\n[[watch]]\npath = \"TREE/missing\"\n",
            ":4: watch.path: ",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"TREE\"\n[alerts]\njsonl = 7\n",
            ":5: invalid type",
        ),
        ("state_dir = \"/s\"\n[[watch]\n", ":2: "),
    ];
    for (text, needle) in cases {
        let r = config_check(text);
        assert_eq!(r.code, 2, "accepted: {text}");
        assert!(
            r.stderr.contains("fimd.toml") && r.stderr.contains(needle),
            "{needle:?} not in {:?}",
            r.stderr
        );
    }
    let ok = config_check("state_dir = \"/s\"\n[[watch]]\npath = \"TREE\"\n");
    assert_eq!(ok.code, 0, "{}", ok.stderr);
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let mut c = Command::new(common::FIMD);
    c.args(["-c", "/nonexistent/fimd.toml", "check"]);
    let r = run(c);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("cannot read configuration /nonexistent/fimd.toml"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_shipped_sample_config_is_valid() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/fimd.toml");
    let settings = fimd::config::Settings::load(std::path::Path::new(sample)).unwrap();
    assert!(
        settings
            .watches
            .iter()
            .any(|w| w.path == std::path::Path::new("/etc"))
    );
}
