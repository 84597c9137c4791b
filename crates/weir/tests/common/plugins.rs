//! The example plugins under `plugins/examples/`, built for wasm32-wasip1 with the public
//! proxy-wasm Rust SDK, and packages assembled from them in temporary directories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/examples")
}

/// Builds every example once per test process (cargo's lock serializes concurrent builds of
/// other test processes; a built tree is a no-op) and returns the directory of the `.wasm`s.
pub fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = examples_dir();
        let out = Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip1", "--quiet"])
            .current_dir(&dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "building the example plugins failed (is the wasm32-wasip1 target installed? `rustup target add wasm32-wasip1`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("target/wasm32-wasip1/release")
    })
}

/// The built module of example `name` (e.g. `auth-callout`).
pub fn wasm(name: &str) -> Vec<u8> {
    let file = built().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// A package of example `name` in `into/<name>`: its metadata and schema, with `edit`
/// applied to the metadata text, and the built module.
pub fn package_with(name: &str, into: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let src = examples_dir().join(name);
    let dst = into.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    let meta = std::fs::read_to_string(src.join("metadata.yaml")).unwrap();
    std::fs::write(dst.join("metadata.yaml"), edit(meta)).unwrap();
    std::fs::copy(src.join("config.schema.json"), dst.join("config.schema.json")).unwrap();
    std::fs::write(dst.join("plugin.wasm"), wasm(name)).unwrap();
    dst
}

pub fn package(name: &str, into: &Path) -> PathBuf {
    package_with(name, into, |m| m)
}

/// `wasm` with a custom section of `extra` bytes appended: the same code, another sha256 and
/// size.
pub fn padded(mut wasm: Vec<u8>, extra: usize) -> Vec<u8> {
    let name = b"weir";
    let mut len = name.len() + 1 + extra;
    wasm.push(0);
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        wasm.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    wasm.push(name.len() as u8);
    wasm.extend_from_slice(name);
    wasm.resize(wasm.len() + extra, 0);
    wasm
}

/// Builds the AssemblyScript example `name` (`plugins/examples-as/NAME`: `npm ci`, then
/// `asc`), once per test process; its directory is then a package.
pub fn assemblyscript(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/examples-as").join(name);
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|b| b == name) {
        for args in [&["ci", "--silent", "--no-audit", "--no-fund"][..], &["run", "--silent", "build"][..]] {
            let out =
                Command::new("npm").args(args).current_dir(&dir).output().expect("npm is installed (scripts/deps.sh)");
            assert!(
                out.status.success(),
                "npm {args:?} in {}: {}{}",
                dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        built.push(name.to_owned());
    }
    dir
}
