//! `cargo xtask demo`: baseline a sample tree, tamper with it, show the alerts, accept, recheck.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use anyhow::{Context, bail};

mod realtime;
pub use realtime::writer;

const CONFIG: &str = r#"# The demo's configuration: a static watch on a sample tree, an append-only one on its logs.
state_dir = "{DIR}/state"

[[watch]]
path = "{DIR}/tree"
policy = "static"
exclude = ["*.swp"]

[[watch]]
path = "{DIR}/logs"
policy = "append-only"
rotate = ["app.log.*"]

[alerts]
jsonl = "{DIR}/alerts.jsonl"
"#;

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    let fimd = crate::build_fimd()?;
    let dir = tempfile::Builder::new().prefix("fimd-demo-").tempdir()?;
    let d = dir.path();
    let tree = d.join("tree");
    fs::create_dir_all(tree.join("etc"))?;
    fs::create_dir_all(tree.join("bin"))?;
    fs::write(tree.join("etc/hosts"), "127.0.0.1 localhost\n")?;
    fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(tree.join("bin/tool"), b"\x7fELF pretend binary")?;
    fs::set_permissions(tree.join("bin/tool"), fs::Permissions::from_mode(0o755))?;
    let logs = d.join("logs");
    fs::create_dir_all(&logs)?;
    let log = logs.join("app.log");
    fs::write(&log, "09:00 service started\n")?;
    let config = d.join("fimd.toml");
    fs::write(&config, CONFIG.replace("{DIR}", &d.display().to_string()))?;

    let fimd_run = |args: &[&str]| -> anyhow::Result<i32> {
        let mut cmd = Command::new(&fimd);
        cmd.arg("-c").arg(&config).args(args);
        eprintln!("\n$ fimd -c {} {}", config.display(), args.join(" "));
        let status = cmd
            .status()
            .with_context(|| format!("running {}", fimd.display()))?;
        let code = status.code().unwrap_or(2);
        eprintln!("(exit status {code})");
        Ok(code)
    };
    expect(fimd_run(&["init"])?, 0)?;
    expect(fimd_run(&["check"])?, 0)?;

    eprintln!(
        "\nTampering: a same-size edit of etc/hosts with its mtime restored, setuid on bin/tool, a new file."
    );
    let hosts = tree.join("etc/hosts");
    let stamp = fs::metadata(&hosts)?.modified()?;
    fs::write(&hosts, "127.6.6.6 localhost\n")?;
    fs::File::options()
        .write(true)
        .open(&hosts)?
        .set_modified(stamp)?;
    fs::set_permissions(tree.join("bin/tool"), fs::Permissions::from_mode(0o4755))?;
    fs::write(tree.join("bin/dropper"), "#!/bin/sh\n")?;

    expect(fimd_run(&["check"])?, 1)?;
    expect(fimd_run(&["check", "--json"])?, 1)?;
    eprintln!("\nThe same alerts went to {}", d.join("alerts.jsonl").display());
    expect(fimd_run(&["accept", "--reason", "demo: approved change"])?, 0)?;
    expect(fimd_run(&["check"])?, 0)?;

    eprintln!("\nThe log grows and is rotated (rename, new log): events, not alerts.");
    let append = |text: &str| -> anyhow::Result<()> {
        use std::io::Write;
        fs::File::options()
            .append(true)
            .open(&log)?
            .write_all(text.as_bytes())?;
        Ok(())
    };
    append("09:05 user alice logged in\n")?;
    expect(fimd_run(&["check"])?, 0)?;
    fs::rename(&log, logs.join("app.log.1"))?;
    fs::write(&log, "10:00 service restarted\n")?;
    expect(fimd_run(&["check"])?, 0)?;
    eprintln!("\nSomeone removes a line from the log: an alert.");
    fs::write(&log, "")?;
    append("10:00 nothing to see here\n")?;
    expect(fimd_run(&["check"])?, 1)?;
    expect(fimd_run(&["report"])?, 0)?;
    expect(
        fimd_run(&["accept", "--reason", "demo: the log edit was approved"])?,
        0,
    )?;
    if !is_root() {
        eprintln!("\nThe realtime part needs root (the kernel sensor): run the demo as root to see it.");
        return Ok(());
    }
    expect(fimd_run(&["selftest"])?, 0)?;
    realtime::show(&fimd, &config, d)?;
    eprintln!(
        "\nDemo complete: fimd caught the content, permission and new-file changes and the edited log, \
         allowed the log's growth and rotation, recorded every comparison for `fimd report`, and \
         reported each change the moment it happened, naming the process that made it."
    );
    Ok(())
}

fn expect(got: i32, want: i32) -> anyhow::Result<()> {
    if got != want {
        bail!("expected exit status {want}, got {got}");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
