//! The container image: `deploy/container/Containerfile` built by `scripts/image.sh` with
//! podman, pulling nothing, then run not as root on a read-only root filesystem, proxying a
//! request end to end. The tests put their own (debug) binary in it, so CI builds no second
//! binary; the image people run gets the static musl build of the same script
//! (docs/operations.md records its size).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn run(cmd: &mut Command) -> Output {
    let out =
        cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/deps.sh installs podman, runc and hadolint)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Removes the container and image however the test ends.
struct Cleanup {
    image: String,
    container: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", &self.container]).output();
        let _ = Command::new("podman").args(["rmi", "-f", &self.image]).output();
    }
}

#[test]
fn the_container_files_are_hadolint_clean() {
    let dir = format!("{ROOT}/deploy/container");
    run(Command::new("hadolint").arg(format!("{dir}/Containerfile")).arg(format!("{dir}/Dockerfile")));
}

#[tokio::test]
async fn the_image_builds_from_scratch_and_proxies_as_a_non_root_read_only_container() {
    let id = std::process::id();
    let clean = Cleanup { image: format!("localhost/weir-test-{id}:t"), container: format!("weir-test-{id}") };
    let built = run(Command::new(format!("{ROOT}/scripts/image.sh")).args([
        "--binary",
        env!("CARGO_BIN_EXE_weir"),
        "--tag",
        &clean.image,
    ]));
    let line = String::from_utf8_lossy(&built.stdout).into_owned();
    let size: u64 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_weir")).unwrap().len();
    assert!(size < binary, "the image ({size} bytes) is not smaller than the unstripped binary ({binary})");
    // One layer, the script's rootfs: no base image under it.
    let layers =
        run(Command::new("podman").args(["image", "inspect", "--format", "{{len .RootFS.Layers}}", &clean.image]));
    assert_eq!(String::from_utf8_lossy(&layers.stdout).trim(), "1", "a base image crept in");

    let app = named("app").await;
    let cfg = tempfile::tempdir().unwrap();
    let yaml = config("  - { name: all, upstream: app }", &upstream_yaml("app", "round_robin", &[(app.port(), 1)], ""));
    std::fs::write(cfg.path().join("weir.yaml"), yaml).unwrap();
    // The container runs as uid 65532: it must be able to read the mounted config.
    std::fs::set_permissions(cfg.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mount = format!("{}:/etc/weir:ro", cfg.path().display());
    // runc, not crun (which this machine's cgroups refuse), and explicit limits; host
    // networking, so the container's port-0 listener is reachable at the address it logs.
    run(Command::new("podman").args([
        "run",
        "-d",
        "--name",
        &clean.container,
        "--runtime",
        "runc",
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=4096:4096",
        "-v",
        &mount,
        &clean.image,
    ]));
    let logs = wait_logs(&clean.container, "admin bound").await;
    let addr = address_after(&logs, "listener bound");
    let (status, body) = get(addr, "/through/the/image", &[]).await;
    assert_eq!((status, &body[..]), (200, &b"app"[..]), "{logs}");
    let admin = address_after(&logs, "admin bound");
    assert_eq!(get(admin, "/readyz", &[]).await.0, 200);
    let user = run(Command::new("podman").args(["inspect", &clean.container, "--format", "{{.Config.User}}"]));
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");
    let shell = Command::new("podman").args(["exec", &clean.container, "/bin/sh", "-c", "true"]).output().unwrap();
    assert!(!shell.status.success(), "the image has a shell");
}

/// The container's log once it contains `needle`.
async fn wait_logs(container: &str, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("podman").args(["logs", container]).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if text.contains(needle) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {needle:?} in the container's log:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `address=` of the first log line containing `what`.
fn address_after(logs: &str, what: &str) -> std::net::SocketAddr {
    let line = logs.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what:?} in\n{logs}"));
    let at = line.find("address=").unwrap_or_else(|| panic!("{line}")) + "address=".len();
    line[at..].split_whitespace().next().unwrap().parse().unwrap()
}
