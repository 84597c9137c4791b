//! OpenTelemetry request spans: the sampling decision, W3C trace context in (the caller's
//! `traceparent`) and out (to the upstream), and export over OTLP/gRPC in batches.
//!
//! Owns: the tracer of a config (kept across reloads while `tracing:` is unchanged, so its
//! export queue and connection live on) and the span of one request. Both request paths
//! start a span after routing and finish it where they count metrics; a request that is not
//! sampled costs reading its `traceparent`, one clock read (the span's start, needed before
//! the decision) and the sampling decision, and nothing is exported for it.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{KeyValue, trace::SpanContext};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};
use tokio::time::Instant;
use weir_config::spec::TracingSpec;

use crate::view::Fields;

/// The header that carries the trace context to the upstream.
pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// A config's tracer: sampler, batch queue and OTLP exporter.
pub struct Tracer {
    spec: TracingSpec,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("spec", &self.spec).finish_non_exhaustive()
    }
}

/// The OTLP exporter refused its settings (`tracing.otlp_endpoint`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TracingError(opentelemetry_otlp::ExporterBuildError);

impl Tracer {
    /// A tracer exporting to `spec.otlp_endpoint`. Needs a Tokio runtime that keeps running
    /// (the exporter's connection lives on it); connects lazily, so a collector that is down
    /// costs dropped spans, never requests.
    pub fn new(spec: &TracingSpec) -> Result<Self, TracingError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(spec.otlp_endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(TracingError)?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(500))
            .with_max_queue_size(8192)
            .build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(spec.service_name.clone()).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(spec.sample_ratio))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("weir");
        Ok(Self { spec: spec.clone(), provider, tracer, propagator: TraceContextPropagator::new() })
    }

    /// The settings it was built from.
    pub fn spec(&self) -> &TracingSpec {
        &self.spec
    }

    /// A span for a request with these headers that started at `started`, when sampled: the
    /// caller's decision if its `traceparent` carries one, else the configured ratio.
    pub fn start(&self, headers: &Fields<'_>, started: Instant) -> Option<Box<RequestSpan>> {
        let parent = self.propagator.extract(&HeaderGet(headers));
        let start = SystemTime::now().checked_sub(started.elapsed()).unwrap_or_else(SystemTime::now);
        let builder = self.tracer.span_builder("request").with_kind(SpanKind::Server).with_start_time(start);
        let span = self.tracer.build_with_context(builder, &parent);
        if !span.is_recording() {
            return None;
        }
        let traceparent = traceparent(span.span_context())?;
        Some(Box::new(RequestSpan { span, traceparent }))
    }

    /// Exports every span ended so far. Blocks: call it off the runtime threads.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::debug!(error = %e, "exporting the last spans failed");
        }
    }
}

impl Drop for Tracer {
    /// The provider's own shutdown blocks until its queue is exported, which needs the
    /// runtime this drop may be running on: it happens on a thread of its own.
    fn drop(&mut self) {
        let provider = self.provider.clone();
        let _ = std::thread::Builder::new().name("weir-otel-shutdown".into()).spawn(move || {
            let _ = provider.shutdown();
        });
    }
}

/// `traceparent` for the upstream: this span as its parent.
fn traceparent(sc: &SpanContext) -> Option<HeaderValue> {
    let v = format!("00-{:032x}-{:016x}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8());
    HeaderValue::try_from(v).ok()
}

/// The request headers, as the propagator reads them.
struct HeaderGet<'a, 'b>(&'a Fields<'b>);

impl Extractor for HeaderGet<'_, '_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get_str(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// The span of one sampled request.
pub struct RequestSpan {
    span: opentelemetry_sdk::trace::Span,
    traceparent: HeaderValue,
}

impl std::fmt::Debug for RequestSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSpan").field("traceparent", &self.traceparent).finish_non_exhaustive()
    }
}

/// What a request came to, for its span.
#[derive(Debug)]
pub struct SpanEnd<'a> {
    /// The route's name.
    pub route: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The request target's path (no query).
    pub path: &'a str,
    /// The upstream chosen, if the request got that far.
    pub upstream: Option<&'a str>,
    /// The last endpoint tried.
    pub endpoint: Option<&'a str>,
    /// The status sent (0: none, the connection closed).
    pub status: u16,
    /// Endpoints tried after the first.
    pub retries: u32,
    /// The client's address.
    pub client: IpAddr,
    /// On MCP routes: the JSON-RPC method and the tool, prompt or resource it named.
    pub mcp: Option<(&'a str, Option<&'a str>)>,
}

impl RequestSpan {
    /// The `traceparent` to send upstream (this span is the upstream's parent).
    pub fn traceparent(&self) -> &HeaderValue {
        &self.traceparent
    }

    /// Records what the request came to and ends the span (it is exported in a batch).
    pub fn finish(mut self: Box<Self>, end: &SpanEnd<'_>) {
        let s = &mut self.span;
        s.update_name(format!("{} {}", end.method, end.route));
        let mut attrs = vec![
            KeyValue::new("http.request.method", end.method.to_owned()),
            KeyValue::new("url.path", end.path.to_owned()),
            KeyValue::new("http.route", end.route.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(end.status)),
            KeyValue::new("client.address", end.client.to_string()),
            KeyValue::new("weir.retries", i64::from(end.retries)),
        ];
        if let Some(u) = end.upstream {
            attrs.push(KeyValue::new("weir.upstream", u.to_owned()));
        }
        if let Some(e) = end.endpoint {
            attrs.push(KeyValue::new("weir.endpoint", e.to_owned()));
        }
        if let Some((method, name)) = end.mcp {
            s.update_name(format!("{method} {}", name.unwrap_or(end.route)));
            attrs.push(KeyValue::new("mcp.method.name", method.to_owned()));
            if let Some(n) = name {
                attrs.push(KeyValue::new("gen_ai.tool.name", n.to_owned()));
            }
        }
        s.set_attributes(attrs);
        if end.status >= 500 || end.status == 0 {
            s.set_status(Status::error(format!("status {}", end.status)));
        }
        s.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ratio: f64) -> TracingSpec {
        TracingSpec { otlp_endpoint: "http://127.0.0.1:9".into(), sample_ratio: ratio, service_name: "t".into() }
    }

    #[tokio::test]
    async fn the_callers_decision_wins_over_the_ratio() {
        let none = Tracer::new(&spec(0.0)).unwrap();
        let mut h = http::HeaderMap::new();
        assert!(none.start(&Fields::Map(&h), Instant::now()).is_none(), "ratio 0 and no caller decision");
        h.insert(&TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let span = none.start(&Fields::Map(&h), Instant::now()).expect("a sampled caller is traced");
        let tp = span.traceparent().to_str().unwrap().to_owned();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "same trace: {tp}");
        assert!(!tp.contains("00f067aa0ba902b7") && tp.ends_with("-01"), "a new span id, sampled: {tp}");
        let all = Tracer::new(&spec(1.0)).unwrap();
        h.insert(&TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        assert!(all.start(&Fields::Map(&h), Instant::now()).is_none(), "the caller said not sampled");
        h.remove(&TRACEPARENT);
        let own = all.start(&Fields::Map(&h), Instant::now()).expect("ratio 1");
        assert_eq!(own.traceparent().len(), 55);
    }
}
