//! The OTLP exporter's HTTP client: the gateway's own one-request client
//! ([`crate::outbound`]) instead of a second HTTP stack.
//!
//! The SDK's batch processor exports from its own thread, outside any
//! tokio runtime; each export is handed to the gateway's runtime (the
//! handle taken at start) and awaited from there, so no runtime of its own
//! is needed and TLS is the gateway's rustls with the ring provider.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::{HttpClient, HttpError};
use tokio::runtime::Handle;

use super::trace::TracingError;
use crate::outbound::Target;

/// How long one export may take (connect, TLS, request, answer).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// See the module docs.
#[derive(Debug)]
pub(crate) struct OtlpClient {
    target: Target,
    runtime: Handle,
}

impl OtlpClient {
    /// A client for `endpoint`; must be called on the gateway's runtime.
    pub(crate) fn new(endpoint: &str) -> Result<Self, TracingError> {
        Ok(Self {
            target: Target::parse(endpoint, None)?,
            runtime: Handle::try_current().map_err(|_| TracingError::NoRuntime)?,
        })
    }
}

/// The exporter did not get an answer (the export task was cancelled).
#[derive(Debug, thiserror::Error)]
#[error("the OTLP export task ended without an answer")]
struct ExportAborted;

// `HttpClient` is an `async_trait`; this is the signature it expands to.
impl HttpClient for OtlpClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let target = self.target.clone();
        let task = self
            .runtime
            .spawn(async move { target.send(request, EXPORT_TIMEOUT).await });
        Box::pin(async move {
            match task.await {
                Ok(r) => r,
                Err(_) => Err(Box::new(ExportAborted) as HttpError),
            }
        })
    }
}
