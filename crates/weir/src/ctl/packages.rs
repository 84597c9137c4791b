//! `weir ctl apply` of plugin packages: a package directory, or the `plugin_packages` a
//! standalone file lists, becomes a `Package` resource.
//!
//! Owns: reading and checking each package here as a gateway would before anything is sent
//! (metadata, schema, compiling the module and checking its imports; a canary instance when
//! the schema accepts an empty config), uploading its module unless the control plane already
//! has those bytes (content-addressed), and the resource that names the module by sha256.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{Value, json};
use weir_config::package::{Package, PackageSpec};

use super::http::Api;

type Error = Box<dyn std::error::Error>;

/// Whether `path` is a package directory (it holds `metadata.yaml`).
pub(super) fn is_package(path: &Path) -> bool {
    path.is_dir() && path.join("metadata.yaml").is_file()
}

/// The directories `text` (read from `file`) lists under `plugin_packages`, relative to it.
pub(super) fn listed(file: &Path, text: &str) -> Result<Vec<PathBuf>, Error> {
    let dirs = weir_config::resources::package_dirs(text)
        .map_err(|errs| super::invalid(&file.display(), "is not valid", &errs))?;
    let base = file.parent().unwrap_or(Path::new("."));
    Ok(dirs.iter().map(|d| weir_gateway::packages::resolve(base, d)).collect())
}

/// Reads and checks the package in `dir`, uploads its module if needed, and returns its
/// `Package` resource as `apply` sends it. A dry run uploads nothing: a module the control
/// plane lacks is added to `pending`, for it to check the resource as if the module were there.
pub(super) async fn resource(api: &Api, dir: &Path, pending: Option<&mut Vec<String>>) -> Result<Value, Error> {
    let pkg = weir_gateway::packages::read_package(dir)
        .map_err(|errs| super::invalid(&dir.display(), "is not a valid package", &errs))?;
    check(&pkg).map_err(|e| format!("{}: {e}", dir.display()))?;
    match pending {
        Some(p) => {
            if !stored(api, &pkg).await? {
                println!(
                    "module/{} would be uploaded ({}, {} KiB) (dry run)",
                    &pkg.sha256[..12],
                    pkg.meta.name,
                    pkg.wasm.len().div_ceil(1024)
                );
                p.push(pkg.sha256.clone());
            }
        }
        None => upload(api, &pkg).await?,
    }
    let spec = PackageSpec::of(&pkg);
    Ok(json!({"kind": "Package", "name": spec.name, "body": serde_json::to_value(&spec)?}))
}

/// What registration on a gateway would refuse, found before anything is uploaded.
fn check(pkg: &Package) -> Result<(), String> {
    let empty = json!({});
    if weir_config::package::check_config(&pkg.schema, &empty).is_ok() {
        weir_gateway::filter::wasm::check_package(pkg, &empty).map_err(|e| e.to_string())
    } else {
        // The routes' configs are not known here; each gateway starts its canary with them.
        weir_gateway::filter::wasm::compile_package(pkg).map_err(|e| e.to_string())
    }
}

/// Whether the control plane has the module; says so when it has.
async fn stored(api: &Api, pkg: &Package) -> Result<bool, Error> {
    let path = format!("/api/v1/modules/{}", pkg.sha256);
    let (status, _) = api.send("HEAD", &path, "application/wasm", Bytes::new()).await?;
    if status == 200 {
        println!("module/{} unchanged ({})", &pkg.sha256[..12], pkg.meta.name);
    }
    Ok(status == 200)
}

/// Uploads the module unless the control plane has it; says which.
async fn upload(api: &Api, pkg: &Package) -> Result<(), Error> {
    if stored(api, pkg).await? {
        return Ok(());
    }
    let path = format!("/api/v1/modules/{}", pkg.sha256);
    let short = &pkg.sha256[..12];
    let (status, v) = api.send("PUT", &path, "application/wasm", Bytes::from(pkg.wasm.to_vec())).await?;
    if !(200..300).contains(&status) {
        let msg = v.get("error").and_then(Value::as_str).map_or_else(|| v.to_string(), str::to_owned);
        return Err(format!("uploading the module of {}: error ({status}): {msg}", pkg.meta.name).into());
    }
    println!("module/{short} uploaded ({}, {} KiB)", pkg.meta.name, pkg.wasm.len().div_ceil(1024));
    Ok(())
}
