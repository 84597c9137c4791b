//! Everything but the stream's own fields: logging, clocks, timers, properties, shared data
//! and queues, metrics, HTTP callouts, context control, and the calls Weir does not support
//! (gRPC callouts, foreign functions), which answer with the status the SDKs handle.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::level_filters::LevelFilter;

use crate::abi::{MetricKind, Status, deserialize_pairs};
use crate::stream::HttpCall;

use super::{Cx, Host, R, give, read, read_str, status, write_u32, write_u64};

const ENV: &str = "env";

fn log(c: &mut Cx<'_>, level: i32, p: i32, l: i32) -> R {
    let msg = read_str(c, p, l)?;
    let plugin = &*c.data().plugin;
    match level {
        0 => tracing::trace!(target: "weir::plugin", plugin, "{msg}"),
        1 => tracing::debug!(target: "weir::plugin", plugin, "{msg}"),
        2 => tracing::info!(target: "weir::plugin", plugin, "{msg}"),
        3 => tracing::warn!(target: "weir::plugin", plugin, "{msg}"),
        4 | 5 => tracing::error!(target: "weir::plugin", plugin, "{msg}"),
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

/// The host's level as proxy-wasm numbers it (TRACE 0 … CRITICAL 5).
fn log_level() -> u32 {
    match LevelFilter::current() {
        LevelFilter::TRACE => 0,
        LevelFilter::DEBUG => 1,
        LevelFilter::INFO => 2,
        LevelFilter::WARN => 3,
        LevelFilter::ERROR => 4,
        _ => 5,
    }
}

pub(super) fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A well-known property, by its dotted path.
fn property(c: &Cx<'_>, path: &[u8]) -> Option<Vec<u8>> {
    let h = c.data();
    let s = &h.stream;
    if let Some((_, v)) = s.properties.custom.iter().find(|(k, _)| k == path) {
        return Some(v.clone());
    }
    let dotted = String::from_utf8_lossy(path).replace('\0', ".");
    let header = |n: &str| s.request_headers.get(n).map(<[u8]>::to_vec);
    let text = |t: Option<&str>| t.map(|t| t.as_bytes().to_vec());
    let int = |n: u64| Some(n.to_le_bytes().to_vec());
    let p = &s.properties;
    match dotted.as_str() {
        "plugin_name" => text(Some(&h.plugin)),
        "plugin_root_id" => text(Some(&h.root_id)),
        "plugin_vm_id" => Some(Vec::new()),
        "request.path" => header(":path"),
        "request.url_path" => header(":path").map(|v| v.split(|b| *b == b'?').next().unwrap_or(&[]).to_vec()),
        "request.query" => header(":path").map(|v| v.splitn(2, |b| *b == b'?').nth(1).unwrap_or(&[]).to_vec()),
        "request.host" => header(":authority"),
        "request.method" => header(":method"),
        "request.scheme" => header(":scheme"),
        "request.protocol" => text(Some(p.protocol)).filter(|v| !v.is_empty()),
        "request.id" => header("x-request-id"),
        "request.useragent" => header("user-agent"),
        "request.referer" => header("referer"),
        "source.address" => p.source.map(|a| a.to_string().into_bytes()),
        "source.port" => p.source.and_then(|a| int(a.port().into())),
        "destination.address" => p.destination.map(|a| a.to_string().into_bytes()),
        "destination.port" => p.destination.and_then(|a| int(a.port().into())),
        "route_name" | "xds.route_name" => text(p.route.as_deref()),
        "cluster_name" | "xds.cluster_name" => text(p.cluster.as_deref()),
        "response.code" => p.response_code.and_then(|c| int(c.into())),
        _ => None,
    }
}

fn get_property(c: &mut Cx<'_>, pp: i32, pl: i32, ptr_out: i32, len_out: i32) -> R {
    let path = read(c, pp, pl)?;
    let v = property(c, &path).ok_or(Status::NotFound)?;
    give(c, &v, ptr_out, len_out)
}

fn set_property(c: &mut Cx<'_>, pp: i32, pl: i32, vp: i32, vl: i32) -> R {
    let path = read(c, pp, pl)?;
    let value = read(c, vp, vl)?;
    let custom = &mut c.data_mut().stream.properties.custom;
    custom.retain(|(k, _)| *k != path);
    custom.push((path, value));
    Ok(())
}

fn get_shared(c: &mut Cx<'_>, kp: i32, kl: i32, ptr_out: i32, len_out: i32, cas_out: i32) -> R {
    let key = read_str(c, kp, kl)?;
    let (v, cas) = c.data().shared.get(&key).ok_or(Status::NotFound)?;
    give(c, &v, ptr_out, len_out)?;
    write_u32(c, cas_out, cas)
}

fn set_shared(c: &mut Cx<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32) -> R {
    let key = read_str(c, kp, kl)?;
    let v = read(c, vp, vl)?;
    match c.data().shared.set(&key, v, cas as u32) {
        Status::Ok => Ok(()),
        s => Err(s.into()),
    }
}

fn queue_id(c: &mut Cx<'_>, np: i32, nl: i32, out: i32, create: bool) -> R {
    let name = read_str(c, np, nl)?;
    let (shared, me) = (&c.data().shared, c.data().instance);
    let id = if create { Some(shared.register_queue(&name, me)) } else { shared.resolve_queue(&name) };
    write_u32(c, out, id.ok_or(Status::NotFound)?)
}

fn dequeue(c: &mut Cx<'_>, id: i32, ptr_out: i32, len_out: i32) -> R {
    let item = c.data().shared.dequeue(id as u32)?;
    give(c, &item, ptr_out, len_out)
}

fn define_metric(c: &mut Cx<'_>, kind: i32, np: i32, nl: i32, out: i32) -> R {
    let kind = MetricKind::from_raw(kind).ok_or(Status::BadArgument)?;
    let name = read_str(c, np, nl)?;
    let id = c.data().shared.define_metric(kind, &name);
    write_u32(c, out, id)
}

fn ok_or(s: Status) -> R {
    if s == Status::Ok { Ok(()) } else { Err(s.into()) }
}

#[allow(clippy::too_many_arguments)]
fn http_call(c: &mut Cx<'_>, up: (i32, i32), hd: (i32, i32), body: (i32, i32), timeout: i32, out: i32) -> R {
    let upstream = read_str(c, up.0, up.1)?;
    let headers = deserialize_pairs(&read(c, hd.0, hd.1)?).ok_or(Status::ParseFailure)?;
    let body = read(c, body.0, body.1)?;
    let has = |n: &[u8]| headers.iter().any(|(k, v)| k == n && !v.is_empty());
    if upstream.is_empty() || !has(b":method") || !has(b":path") || !has(b":authority") {
        return Err(Status::BadArgument.into());
    }
    let h = c.data_mut();
    let token = h.token();
    let call = HttpCall { token, upstream, headers, body, timeout: Duration::from_millis(timeout as u32 as u64) };
    if h.lent != 0 {
        h.stream.calls.push(call)
    } else {
        h.root_calls.push(call)
    }
    write_u32(c, out, token)
}

fn get_status(c: &mut Cx<'_>, code_out: i32, ptr_out: i32, len_out: i32) -> R {
    let code = c.data().call_response.as_ref().and_then(|r| {
        let v = r.headers.iter().find(|(k, _)| k == b":status")?;
        std::str::from_utf8(&v.1).ok()?.parse::<u32>().ok()
    });
    write_u32(c, code_out, code.unwrap_or(0))?;
    give(c, &[], ptr_out, len_out)
}

fn set_effective_context(c: &mut Cx<'_>, id: i32) -> R {
    let h = c.data();
    let id = id as u32;
    if id != 0 && (id == h.root || id == h.lent) { Ok(()) } else { Err(Status::BadArgument.into()) }
}

fn register_core(h: &mut Host) -> wasmtime::Result<()> {
    h.wrap(ENV, "proxy_log", |mut c: Cx<'_>, lvl: i32, p: i32, l: i32| status(log(&mut c, lvl, p, l)))?;
    h.wrap(ENV, "proxy_get_log_level", |mut c: Cx<'_>, out: i32| status(write_u32(&mut c, out, log_level())))?;
    h.wrap(ENV, "proxy_get_current_time_nanoseconds", |mut c: Cx<'_>, out: i32| {
        status(write_u64(&mut c, out, now_nanos()))
    })?;
    h.wrap(ENV, "proxy_set_tick_period_milliseconds", |mut c: Cx<'_>, ms: i32| {
        c.data_mut().tick = (ms != 0).then(|| Duration::from_millis(ms as u32 as u64));
        status(Ok(()))
    })?;
    h.wrap(ENV, "proxy_get_property", |mut c: Cx<'_>, pp: i32, pl: i32, p: i32, l: i32| {
        status(get_property(&mut c, pp, pl, p, l))
    })?;
    h.wrap(ENV, "proxy_set_property", |mut c: Cx<'_>, pp: i32, pl: i32, vp: i32, vl: i32| {
        status(set_property(&mut c, pp, pl, vp, vl))
    })?;
    h.wrap(ENV, "proxy_set_effective_context", |mut c: Cx<'_>, id: i32| status(set_effective_context(&mut c, id)))?;
    // Weir never defers a context's end, so there is nothing pending: done is done.
    h.wrap(ENV, "proxy_done", |_: Cx<'_>| status(Ok(())))?;
    Ok(())
}

fn register_shared(h: &mut Host) -> wasmtime::Result<()> {
    h.wrap(ENV, "proxy_get_shared_data", |mut c: Cx<'_>, kp: i32, kl: i32, p: i32, l: i32, cas: i32| {
        status(get_shared(&mut c, kp, kl, p, l, cas))
    })?;
    h.wrap(ENV, "proxy_set_shared_data", |mut c: Cx<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| {
        status(set_shared(&mut c, kp, kl, vp, vl, cas))
    })?;
    h.wrap(ENV, "proxy_register_shared_queue", |mut c: Cx<'_>, np: i32, nl: i32, out: i32| {
        status(queue_id(&mut c, np, nl, out, true))
    })?;
    h.wrap(ENV, "proxy_resolve_shared_queue", |mut c: Cx<'_>, _vp: i32, _vl: i32, np: i32, nl: i32, out: i32| {
        status(queue_id(&mut c, np, nl, out, false))
    })?;
    h.wrap(ENV, "proxy_enqueue_shared_queue", |c: Cx<'_>, id: i32, vp: i32, vl: i32| {
        status(read(&c, vp, vl).and_then(|v| ok_or(c.data().shared.enqueue(id as u32, v))))
    })?;
    h.wrap(ENV, "proxy_dequeue_shared_queue", |mut c: Cx<'_>, id: i32, p: i32, l: i32| {
        status(dequeue(&mut c, id, p, l))
    })?;
    h.wrap(ENV, "proxy_define_metric", |mut c: Cx<'_>, kind: i32, np: i32, nl: i32, out: i32| {
        status(define_metric(&mut c, kind, np, nl, out))
    })?;
    h.wrap(ENV, "proxy_increment_metric", |c: Cx<'_>, id: i32, delta: i64| {
        status(ok_or(c.data().shared.increment(id as u32, delta)))
    })?;
    h.wrap(ENV, "proxy_record_metric", |c: Cx<'_>, id: i32, v: i64| {
        status(ok_or(c.data().shared.record(id as u32, v as u64)))
    })?;
    h.wrap(ENV, "proxy_get_metric", |mut c: Cx<'_>, id: i32, out: i32| {
        let v = c.data().shared.metric(id as u32);
        status(v.ok_or(Status::NotFound.into()).and_then(|v| write_u64(&mut c, out, v)))
    })?;
    Ok(())
}

fn register_calls(h: &mut Host) -> wasmtime::Result<()> {
    h.wrap(
        ENV,
        "proxy_http_call",
        |mut c: Cx<'_>, up: i32, ul: i32, hp: i32, hl: i32, bp: i32, bl: i32, _tp: i32, _tl: i32, t: i32, out: i32| {
            status(http_call(&mut c, (up, ul), (hp, hl), (bp, bl), t, out))
        },
    )?;
    h.wrap(ENV, "proxy_get_status", |mut c: Cx<'_>, code: i32, p: i32, l: i32| status(get_status(&mut c, code, p, l)))?;
    // gRPC callouts are not supported: INTERNAL_FAILURE is the "could not send" the SDKs
    // handle (they panic on UNIMPLEMENTED here), and no call or stream ever exists.
    h.wrap(
        ENV,
        "proxy_grpc_call",
        |_: Cx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            status(Err(Status::InternalFailure.into()))
        },
    )?;
    h.wrap(
        ENV,
        "proxy_grpc_stream",
        |_: Cx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            status(Err(Status::InternalFailure.into()))
        },
    )?;
    h.wrap(ENV, "proxy_grpc_send", |_: Cx<'_>, _: i32, _: i32, _: i32, _: i32| status(Err(Status::NotFound.into())))?;
    h.wrap(ENV, "proxy_grpc_cancel", |_: Cx<'_>, _: i32| status(Err(Status::NotFound.into())))?;
    h.wrap(ENV, "proxy_grpc_close", |_: Cx<'_>, _: i32| status(Err(Status::NotFound.into())))?;
    // No foreign functions are registered.
    h.wrap(ENV, "proxy_call_foreign_function", |_: Cx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
        status(Err(Status::NotFound.into()))
    })?;
    Ok(())
}

pub(super) fn register(h: &mut Host) -> wasmtime::Result<()> {
    register_core(h)?;
    register_shared(h)?;
    register_calls(h)
}
