//! OpenTelemetry tracing: the exporter, and the span of one request or
//! session.

use std::borrow::Cow;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Tracer};

use crate::config::TelemetryConfig;

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// `telemetry.otlp_endpoint` is not a usable URL.
    #[error("telemetry.otlp_endpoint: {0}")]
    Endpoint(#[from] crate::outbound::TargetError),
    /// The exporter refused its settings.
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// Not called on a tokio runtime.
    #[error("tracing must start on the gateway's runtime")]
    NoRuntime,
}

/// The tracer and its exporter.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: Tracer,
    propagator: TraceContextPropagator,
}

impl Tracing {
    /// Builds the OTLP/HTTP exporter and a batching tracer provider. Must
    /// be called on the gateway's runtime: exports are sent from it.
    pub fn new(config: &TelemetryConfig) -> Result<Self, TracingError> {
        let client = super::otlp::OtlpClient::new(&config.endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .build()
            .map_err(TracingError::Exporter)?;
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio)));
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("agentmux");
        Ok(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// Starts the span of one agent request, child of the agent's
    /// `traceparent` when it sent one, and rewrites `headers` so the
    /// upstream sees this span as its parent.
    pub fn start(&self, name: &'static str, route: &str, headers: &mut HeaderMap) -> RequestSpan {
        let parent = self.propagator.extract(&HeaderExtractor(headers));
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("agentmux.route", route.to_owned())])
            .start_with_context(&self.tracer, &parent);
        let cx = parent.with_span(span);
        self.propagator.inject_context(&cx, &mut HeaderInjector(headers));
        RequestSpan { cx }
    }

    /// Exports what is buffered and stops; blocking, so call it from
    /// `spawn_blocking`.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "trace exporter shutdown failed");
        }
    }
}

/// A live request or session span; ends when dropped.
#[derive(Debug, Clone)]
pub struct RequestSpan {
    cx: Context,
}

impl RequestSpan {
    /// Adds an attribute.
    pub fn set(&self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.cx.span().set_attribute(KeyValue::new(key, value.into()));
    }

    /// Marks the span failed with a reason.
    pub fn error(&self, reason: impl Into<Cow<'static, str>>) {
        self.cx.span().set_status(Status::error(reason));
    }

    /// Ends the span now.
    pub fn end(self) {
        self.cx.span().end();
    }
}
