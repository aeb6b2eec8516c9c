//! The HMAC key path is judged by type and size before anything opens it: a FIFO, a device, a
//! directory, a symlink or a huge file there is refused at once with what is wrong, never read
//! or waited on (issue: "An HMAC key that is a FIFO blocks check and run forever. A 4 GiB key is
//! read whole").
mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::Fixture;

/// How a case puts something in place of the key.
type Plant<'a> = Box<dyn Fn() + 'a>;

/// Replaces the key with `plant`, then runs `args`: each must exit 2 within a few seconds and
/// name the key and `what`.
fn refused(f: &Fixture, what: &str, args: &[&str]) {
    let began = Instant::now();
    let r = f.fimd(args);
    let took = began.elapsed();
    assert_eq!(
        r.code, 2,
        "{args:?} with a key that is {what}: {}{}",
        r.stdout, r.stderr
    );
    assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
    let key = f.state.join("hmac.key");
    assert!(
        r.stderr.contains(&key.display().to_string()) && r.stderr.contains(what),
        "{args:?}: {}",
        r.stderr
    );
}

#[test]
fn keys_that_are_not_small_regular_files_are_refused_at_once() {
    if !common::privileged("making FIFOs and devices as root") {
        return;
    }
    let f = Fixture::new();
    f.init();
    let key = f.state.join("hmac.key");
    let saved = fs::read(&key).unwrap();
    let plant = |how: &dyn Fn()| {
        fs::remove_file(&key).ok();
        fs::remove_dir(&key).ok();
        how();
    };
    let cases: Vec<(&str, Plant)> = vec![
        (
            "a FIFO",
            Box::new(|| common::sh("mkfifo", &["-m", "600", key.to_str().unwrap()])),
        ),
        (
            "a device",
            Box::new(|| common::sh("mknod", &["-m", "600", key.to_str().unwrap(), "c", "1", "3"])),
        ),
        ("a directory", Box::new(|| fs::create_dir(&key).unwrap())),
        (
            "a symbolic link",
            Box::new(|| {
                let real = f.dir.path().join("real.key");
                fs::write(&real, &saved).unwrap();
                std::os::unix::fs::symlink(&real, &key).unwrap();
            }),
        ),
        (
            "more than the 4096",
            Box::new(|| {
                // 4 GiB, sparse: reading it whole took 31 s and 4.2 GB before.
                let file = fs::File::create(&key).unwrap();
                file.set_len(4 << 30).unwrap();
            }),
        ),
    ];
    for (what, how) in &cases {
        plant(how.as_ref());
        for args in [
            &["check"][..],
            &["run"][..],
            &["accept"][..],
            &["baseline", "show"][..],
        ] {
            refused(&f, what, args);
        }
    }
    // Restored, the same baseline verifies: nothing was written while the key was wrong.
    plant(&|| fs::write(&key, &saved).unwrap());
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_eq!(f.check().0, 0);
}
