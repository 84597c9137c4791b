//! Header maps, buffers and stream control: the calls that read and edit the lent stream.

use crate::abi::{BufferType, MapType, Status, deserialize_pairs, serialize_pairs_into, serialized_len};
use crate::host::HostState;
use crate::stream::{Fields, LocalResponse};

use super::{Cx, Host, R, borrowed, give_with, read, read_str, status, write_u32};

const ENV: &str = "env";

/// The map `id` names, when the current callback may see it.
fn map(h: &mut HostState, id: i32) -> R<MapRef<'_>> {
    let t = MapType::from_raw(id).ok_or(Status::BadArgument)?;
    Ok(match t {
        MapType::RequestHeaders => MapRef::Own(&mut h.stream.request_headers),
        MapType::RequestTrailers => MapRef::Own(&mut h.stream.request_trailers),
        MapType::ResponseHeaders => MapRef::Own(&mut h.stream.response_headers),
        MapType::ResponseTrailers => MapRef::Own(&mut h.stream.response_trailers),
        MapType::CallResponseHeaders => MapRef::Call(h.call_response.as_ref().map(|r| r.headers.as_slice())),
        MapType::CallResponseTrailers | MapType::GrpcInitialMetadata | MapType::GrpcTrailingMetadata => {
            MapRef::Call(None)
        }
    })
}

/// A map the plugin may edit, or a callout's read-only one.
enum MapRef<'a> {
    Own(&'a mut Fields),
    Call(Option<&'a [(Vec<u8>, Vec<u8>)]>),
}

impl MapRef<'_> {
    fn serialize_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Own(f) => f.serialize_into(out),
            Self::Call(Some(p)) => serialize_pairs_into(p.iter().map(|(k, v)| (k.as_slice(), v.as_slice())), out),
            Self::Call(None) => {}
        }
    }

    fn serialized_len(&self) -> usize {
        match self {
            Self::Own(f) => f.serialized_len(),
            Self::Call(Some(p)) => serialized_len(p.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))),
            Self::Call(None) => 0,
        }
    }

    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match self {
            Self::Own(f) => f.get_raw(key),
            Self::Call(p) => (*p)?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_slice()),
        }
    }
}

fn get_map_size(c: &mut Cx<'_>, id: i32, out: i32) -> R {
    let n = map(c.data_mut(), id)?.serialized_len();
    write_u32(c, out, n as u32)
}

fn get_map_pairs(c: &mut Cx<'_>, id: i32, ptr_out: i32, len_out: i32) -> R {
    give_with(c, ptr_out, len_out, |c, out| {
        map(c.data_mut(), id)?.serialize_into(out);
        Ok(())
    })
}

fn get_map_value(c: &mut Cx<'_>, id: i32, kp: i32, kl: i32, ptr_out: i32, len_out: i32) -> R {
    give_with(c, ptr_out, len_out, |c, out| {
        borrowed(c, [(kp, kl)], |[k], h| {
            out.extend_from_slice(map(h, id)?.get(k).ok_or(Status::NotFound)?);
            Ok(())
        })
    })
}

/// Runs `f` on an editable map; a callout's maps are read-only.
fn edit(h: &mut HostState, id: i32, f: impl FnOnce(&mut Fields)) -> R {
    match map(h, id)? {
        MapRef::Own(fields) => {
            f(fields);
            Ok(())
        }
        MapRef::Call(_) => Err(Status::BadArgument.into()),
    }
}

fn set_map_pairs(c: &mut Cx<'_>, id: i32, p: i32, l: i32) -> R {
    let pairs = deserialize_pairs(&read(c, p, l)?).ok_or(Status::ParseFailure)?;
    edit(c.data_mut(), id, |f| f.replace(pairs))
}

fn edit_value(c: &mut Cx<'_>, id: i32, kp: i32, kl: i32, vp: i32, vl: i32, add: bool) -> R {
    borrowed(c, [(kp, kl), (vp, vl)], |[k, v], h| edit(h, id, |f| if add { f.add_raw(k, v) } else { f.set_raw(k, v) }))
}

fn remove_value(c: &mut Cx<'_>, id: i32, kp: i32, kl: i32) -> R {
    borrowed(c, [(kp, kl)], |[k], h| edit(h, id, |f| f.remove_raw(k)))
}

/// The bytes of buffer `id` the current callback may see.
fn buffer(h: &HostState, id: i32) -> R<&[u8]> {
    let t = BufferType::from_raw(id).ok_or(Status::BadArgument)?;
    Ok(match t {
        BufferType::RequestBody => &h.stream.request_body,
        BufferType::ResponseBody => match &h.call_response {
            // The spec says a callout's body is read as HTTP_RESPONSE_BODY too.
            Some(r) if h.lent == 0 => &r.body,
            _ => &h.stream.response_body,
        },
        BufferType::CallResponseBody => &h.call_response.as_ref().ok_or(Status::NotFound)?.body,
        BufferType::VmConfiguration if h.configuring => &h.vm_config,
        BufferType::PluginConfiguration if h.configuring => &h.plugin_config,
        _ => return Err(Status::NotFound.into()),
    })
}

fn get_buffer_bytes(c: &mut Cx<'_>, id: i32, start: i32, max: i32, ptr_out: i32, len_out: i32) -> R {
    let b = buffer(c.data(), id)?;
    let start = start as u32 as usize;
    if start > b.len() {
        return Err(Status::BadArgument.into());
    }
    let end = start.saturating_add(max as u32 as usize).min(b.len());
    give_with(c, ptr_out, len_out, |c, out| {
        out.extend_from_slice(&buffer(c.data(), id)?[start..end]);
        Ok(())
    })
}

fn get_buffer_status(c: &mut Cx<'_>, id: i32, len_out: i32, flags_out: i32) -> R {
    let n = buffer(c.data(), id)?.len();
    write_u32(c, len_out, n as u32)?;
    write_u32(c, flags_out, 0)
}

fn set_buffer_bytes(c: &mut Cx<'_>, id: i32, start: i32, size: i32, vp: i32, vl: i32) -> R {
    let value = read(c, vp, vl)?;
    let s = &mut c.data_mut().stream;
    let body = match BufferType::from_raw(id).ok_or(Status::BadArgument)? {
        BufferType::RequestBody => &mut s.request_body,
        BufferType::ResponseBody => &mut s.response_body,
        _ => return Err(Status::NotFound.into()),
    };
    let start = (start as u32 as usize).min(body.len());
    let end = start.saturating_add(size as u32 as usize).min(body.len());
    body.splice(start..end, value);
    s.body_changed = true;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(c: &mut Cx<'_>, code: i32, dp: i32, dl: i32, bp: i32, bl: i32, hp: i32, hl: i32) -> R {
    let details = read_str(c, dp, dl)?;
    let body = read(c, bp, bl)?;
    let headers = deserialize_pairs(&read(c, hp, hl)?).ok_or(Status::ParseFailure)?;
    let status = u16::try_from(code).ok().filter(|s| (100..=599).contains(s)).ok_or(Status::BadArgument)?;
    c.data_mut().stream.local = Some(LocalResponse { status, details, headers, body });
    Ok(())
}

/// Streams 0 and 1 are the HTTP request and response; TCP streams do not exist here.
fn stream_op(c: &mut Cx<'_>, kind: i32, close: bool) -> R {
    if !(0..=3).contains(&kind) {
        return Err(Status::BadArgument.into());
    }
    if kind > 1 {
        return Err(Status::Unimplemented.into());
    }
    let s = &mut c.data_mut().stream;
    if close {
        s.closed = true
    } else {
        s.resumed = true
    }
    Ok(())
}

pub(super) fn register(h: &mut Host) -> wasmtime::Result<()> {
    h.wrap(ENV, "proxy_get_header_map_size", |mut c: Cx<'_>, id: i32, out: i32| status(get_map_size(&mut c, id, out)))?;
    h.wrap(ENV, "proxy_get_header_map_pairs", |mut c: Cx<'_>, id: i32, p: i32, l: i32| {
        status(get_map_pairs(&mut c, id, p, l))
    })?;
    h.wrap(ENV, "proxy_set_header_map_pairs", |mut c: Cx<'_>, id: i32, p: i32, l: i32| {
        status(set_map_pairs(&mut c, id, p, l))
    })?;
    h.wrap(ENV, "proxy_get_header_map_value", |mut c: Cx<'_>, id: i32, kp: i32, kl: i32, p: i32, l: i32| {
        status(get_map_value(&mut c, id, kp, kl, p, l))
    })?;
    h.wrap(ENV, "proxy_add_header_map_value", |mut c: Cx<'_>, id: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
        status(edit_value(&mut c, id, kp, kl, vp, vl, true))
    })?;
    h.wrap(ENV, "proxy_replace_header_map_value", |mut c: Cx<'_>, id: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
        status(edit_value(&mut c, id, kp, kl, vp, vl, false))
    })?;
    h.wrap(ENV, "proxy_remove_header_map_value", |mut c: Cx<'_>, id: i32, kp: i32, kl: i32| {
        status(remove_value(&mut c, id, kp, kl))
    })?;
    h.wrap(ENV, "proxy_get_buffer_bytes", |mut c: Cx<'_>, id: i32, s: i32, m: i32, p: i32, l: i32| {
        status(get_buffer_bytes(&mut c, id, s, m, p, l))
    })?;
    h.wrap(ENV, "proxy_get_buffer_status", |mut c: Cx<'_>, id: i32, l: i32, f: i32| {
        status(get_buffer_status(&mut c, id, l, f))
    })?;
    h.wrap(ENV, "proxy_set_buffer_bytes", |mut c: Cx<'_>, id: i32, s: i32, n: i32, p: i32, l: i32| {
        status(set_buffer_bytes(&mut c, id, s, n, p, l))
    })?;
    h.wrap(
        ENV,
        "proxy_send_local_response",
        |mut c: Cx<'_>, code: i32, dp: i32, dl: i32, bp: i32, bl: i32, hp: i32, hl: i32, _grpc: i32| {
            status(send_local_response(&mut c, code, dp, dl, bp, bl, hp, hl))
        },
    )?;
    h.wrap(ENV, "proxy_continue_stream", |mut c: Cx<'_>, kind: i32| status(stream_op(&mut c, kind, false)))?;
    h.wrap(ENV, "proxy_close_stream", |mut c: Cx<'_>, kind: i32| status(stream_op(&mut c, kind, true)))?;
    // ABI 0.1.0 names some SDK builds still import.
    h.wrap(ENV, "proxy_continue_request", |mut c: Cx<'_>| status(stream_op(&mut c, 0, false)))?;
    h.wrap(ENV, "proxy_continue_response", |mut c: Cx<'_>| status(stream_op(&mut c, 1, false)))?;
    Ok(())
}
