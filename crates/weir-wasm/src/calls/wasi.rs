//! The WASI preview1 calls that modules built for `wasm32-wasip1` import. A plugin has no
//! files, arguments or environment: output goes to the log, clocks and randomness are real,
//! everything else reports "not supported" rather than being a missing import.

use crate::abi::errno;

use super::misc::now_nanos;
use super::{Cx, Host, read, write_u32, write_u64};

const WASI: &str = "wasi_snapshot_preview1";

/// `fd_write` to stdout (logged at info) or stderr (logged at error).
fn fd_write(c: &mut Cx<'_>, fd: i32, iovs: i32, n: i32, out: i32) -> wasmtime::Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(errno::BADF);
    }
    let mut text = Vec::new();
    for i in 0..n.max(0) {
        let Ok(iov) = read(c, iovs.wrapping_add(i * 8), 8) else { return Ok(errno::FAULT) };
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        let Ok(bytes) = read(c, ptr, len) else { return Ok(errno::FAULT) };
        text.extend_from_slice(&bytes);
    }
    let msg = String::from_utf8_lossy(&text);
    let msg = msg.trim_end();
    let plugin = &*c.data().plugin;
    if !msg.is_empty() {
        if fd == 1 {
            tracing::info!(target: "weir::plugin", plugin, "{msg}");
        } else {
            tracing::error!(target: "weir::plugin", plugin, "{msg}");
        }
    }
    Ok(write_u32(c, out, text.len() as u32).map_or(errno::FAULT, |()| errno::SUCCESS))
}

fn clock_time_get(c: &mut Cx<'_>, id: i32, out: i32) -> i32 {
    let t = match id {
        0 => now_nanos(),
        1 => monotonic_nanos(),
        _ => return errno::NOTSUP,
    };
    write_u64(c, out, t).map_or(errno::FAULT, |()| errno::SUCCESS)
}

fn monotonic_nanos() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}

fn random_get(c: &mut Cx<'_>, ptr: i32, len: i32) -> i32 {
    if !(0..=1 << 16).contains(&len) {
        return errno::INVAL;
    }
    let bytes: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
    super::write(c, ptr, &bytes).map_or(errno::FAULT, |()| errno::SUCCESS)
}

/// Writes two zero counts (no arguments, no environment).
fn zero_sizes(c: &mut Cx<'_>, a: i32, b: i32) -> i32 {
    match write_u32(c, a, 0).and_then(|()| write_u32(c, b, 0)) {
        Ok(()) => errno::SUCCESS,
        Err(_) => errno::FAULT,
    }
}

pub(super) fn register(h: &mut Host) -> wasmtime::Result<()> {
    h.wrap(WASI, "fd_write", |mut c: Cx<'_>, fd: i32, iovs: i32, n: i32, out: i32| fd_write(&mut c, fd, iovs, n, out))?;
    h.wrap(WASI, "clock_time_get", |mut c: Cx<'_>, id: i32, _precision: i64, out: i32| {
        clock_time_get(&mut c, id, out)
    })?;
    h.wrap(WASI, "clock_res_get", |mut c: Cx<'_>, _id: i32, out: i32| {
        write_u64(&mut c, out, 1_000).map_or(errno::FAULT, |()| errno::SUCCESS)
    })?;
    h.wrap(WASI, "random_get", |mut c: Cx<'_>, p: i32, l: i32| random_get(&mut c, p, l))?;
    h.wrap(WASI, "environ_sizes_get", |mut c: Cx<'_>, a: i32, b: i32| zero_sizes(&mut c, a, b))?;
    h.wrap(WASI, "environ_get", |_: Cx<'_>, _: i32, _: i32| errno::SUCCESS)?;
    h.wrap(WASI, "args_sizes_get", |mut c: Cx<'_>, a: i32, b: i32| zero_sizes(&mut c, a, b))?;
    h.wrap(WASI, "args_get", |_: Cx<'_>, _: i32, _: i32| errno::SUCCESS)?;
    h.wrap(WASI, "sched_yield", |_: Cx<'_>| errno::SUCCESS)?;
    h.wrap(WASI, "proc_exit", |_: Cx<'_>, code: i32| -> wasmtime::Result<()> {
        wasmtime::bail!("plugin called proc_exit({code})")
    })?;
    // No files: every descriptor is bad, and calls on none are not supported.
    h.wrap(WASI, "fd_close", |_: Cx<'_>, _: i32| errno::BADF)?;
    h.wrap(WASI, "fd_read", |_: Cx<'_>, _: i32, _: i32, _: i32, _: i32| errno::BADF)?;
    h.wrap(WASI, "fd_seek", |_: Cx<'_>, _: i32, _: i64, _: i32, _: i32| errno::BADF)?;
    h.wrap(WASI, "fd_fdstat_get", |_: Cx<'_>, _: i32, _: i32| errno::BADF)?;
    h.wrap(WASI, "fd_fdstat_set_flags", |_: Cx<'_>, _: i32, _: i32| errno::BADF)?;
    h.wrap(WASI, "fd_prestat_get", |_: Cx<'_>, _: i32, _: i32| errno::BADF)?;
    h.wrap(WASI, "fd_prestat_dir_name", |_: Cx<'_>, _: i32, _: i32, _: i32| errno::BADF)?;
    h.wrap(WASI, "fd_filestat_get", |_: Cx<'_>, _: i32, _: i32| errno::BADF)?;
    h.wrap(WASI, "path_open", |_: Cx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32, _: i32| {
        errno::NOSYS
    })?;
    h.wrap(WASI, "poll_oneoff", |_: Cx<'_>, _: i32, _: i32, _: i32, _: i32| errno::NOTSUP)?;
    // Older toolchains (AssemblyScript's proxy-wasm runtime) import the same calls from
    // preview 0; the ones defined here have the same signatures and meaning there.
    h.alias(WASI, "wasi_unstable")
}
