//! The host functions: every proxy-wasm 0.2.1 import and the WASI preview1 calls the SDKs
//! import, registered on one [`wasmtime::Linker`]. Shared here: reading and writing the
//! module's memory, and turning a call's outcome into the status the SDKs expect.

mod fields;
mod misc;
mod wasi;

use wasmtime::{Caller, Linker};

use crate::abi::Status;
use crate::host::HostState;

pub(crate) type Cx<'a> = Caller<'a, HostState>;

/// Why a host function did not succeed: a status for the plugin, or a trap that ends the call
/// (the allocator it called back into trapped).
pub(crate) enum Fail {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for Fail {
    fn from(s: Status) -> Self {
        Self::Status(s)
    }
}

pub(crate) type R<T = ()> = Result<T, Fail>;

/// The i32 a host function returns.
pub(crate) fn status(r: R) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(Status::Ok.into()),
        Err(Fail::Status(s)) => Ok(s.into()),
        Err(Fail::Trap(e)) => Err(e),
    }
}

fn range(ptr: i32, len: i32) -> Option<std::ops::Range<usize>> {
    let p = ptr as u32 as usize;
    Some(p..p.checked_add(len as u32 as usize)?)
}

/// Copies `len` bytes at `ptr` out of the module's memory.
pub(crate) fn read(c: &Cx<'_>, ptr: i32, len: i32) -> R<Vec<u8>> {
    let m = c.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let r = range(ptr, len).ok_or(Status::InvalidMemoryAccess)?;
    Ok(m.data(c).get(r).ok_or(Status::InvalidMemoryAccess)?.to_vec())
}

/// Runs `f` on the bytes at each `(ptr, len)` of the module's memory and the host state,
/// without copying the bytes out.
pub(crate) fn borrowed<const N: usize, T>(
    c: &mut Cx<'_>,
    spans: [(i32, i32); N],
    f: impl FnOnce([&[u8]; N], &mut HostState) -> R<T>,
) -> R<T> {
    let m = c.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let (mem, h) = m.data_and_store_mut(c);
    let mem: &[u8] = mem;
    let mut out: [&[u8]; N] = [&[]; N];
    for (o, (p, l)) in out.iter_mut().zip(spans) {
        *o = range(p, l).and_then(|r| mem.get(r)).ok_or(Status::InvalidMemoryAccess)?;
    }
    f(out, h)
}

/// Hands the plugin the bytes `fill` writes, built in the instance's scratch buffer (kept
/// from call to call, so this allocates nothing on the host side).
pub(crate) fn give_with(
    c: &mut Cx<'_>,
    ptr_out: i32,
    len_out: i32,
    fill: impl FnOnce(&mut Cx<'_>, &mut Vec<u8>) -> R,
) -> R {
    let mut scratch = std::mem::take(&mut c.data_mut().scratch);
    scratch.clear();
    let r = fill(c, &mut scratch).and_then(|()| give(c, &scratch, ptr_out, len_out));
    if scratch.capacity() <= 64 << 10 {
        c.data_mut().scratch = scratch;
    }
    r
}

/// Reads a string argument (names, keys); invalid UTF-8 is replaced, never refused.
pub(crate) fn read_str(c: &Cx<'_>, ptr: i32, len: i32) -> R<String> {
    Ok(String::from_utf8_lossy(&read(c, ptr, len)?).into_owned())
}

/// Writes `bytes` at `ptr`.
pub(crate) fn write(c: &mut Cx<'_>, ptr: i32, bytes: &[u8]) -> R {
    let m = c.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let r = range(ptr, bytes.len() as i32).ok_or(Status::InvalidMemoryAccess)?;
    m.data_mut(c).get_mut(r).ok_or(Status::InvalidMemoryAccess)?.copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_u32(c: &mut Cx<'_>, ptr: i32, v: u32) -> R {
    write(c, ptr, &v.to_le_bytes())
}

pub(crate) fn write_u64(c: &mut Cx<'_>, ptr: i32, v: u64) -> R {
    write(c, ptr, &v.to_le_bytes())
}

/// Hands `bytes` to the plugin: allocated in its memory by its own allocator, pointer and
/// length written at `ptr_out` and `len_out`. Empty data is a null pointer, as the SDKs expect.
pub(crate) fn give(c: &mut Cx<'_>, bytes: &[u8], ptr_out: i32, len_out: i32) -> R {
    if bytes.is_empty() {
        write_u32(c, ptr_out, 0)?;
        return write_u32(c, len_out, 0);
    }
    let alloc = c.data().alloc.clone().ok_or(Status::InternalFailure)?;
    let p = alloc.call(&mut *c, bytes.len() as i32).map_err(Fail::Trap)?;
    if p == 0 {
        return Err(Status::InternalFailure.into());
    }
    write(c, p, bytes)?;
    write_u32(c, ptr_out, p as u32)?;
    write_u32(c, len_out, bytes.len() as u32)
}

/// Registers every host function, remembering each name so modules can be checked against
/// them before they are instantiated.
pub(crate) struct Host {
    pub(crate) linker: Linker<HostState>,
    pub(crate) names: Vec<(&'static str, &'static str)>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("functions", &self.names.len()).finish()
    }
}

impl Host {
    pub(crate) fn new(engine: &wasmtime::Engine) -> wasmtime::Result<Self> {
        let mut h = Self { linker: Linker::new(engine), names: Vec::new() };
        fields::register(&mut h)?;
        misc::register(&mut h)?;
        wasi::register(&mut h)?;
        Ok(h)
    }

    /// Defines `module.name`.
    pub(crate) fn wrap<Params, Args>(
        &mut self,
        module: &'static str,
        name: &'static str,
        f: impl wasmtime::IntoFunc<HostState, Params, Args>,
    ) -> wasmtime::Result<()> {
        self.names.push((module, name));
        self.linker.func_wrap(module, name, f)?;
        Ok(())
    }

    /// Defines every function of `module` under `alias` too.
    pub(crate) fn alias(&mut self, module: &'static str, alias: &'static str) -> wasmtime::Result<()> {
        self.linker.alias_module(module, alias)?;
        let names: Vec<(&'static str, &'static str)> =
            self.names.iter().filter(|(m, _)| *m == module).map(|(_, n)| (alias, *n)).collect();
        self.names.extend(names);
        Ok(())
    }

    /// Whether the host defines `module.name`.
    pub(crate) fn defines(&self, module: &str, name: &str) -> bool {
        self.names.iter().any(|(m, n)| *m == module && *n == name)
    }
}
