//! The series of the HTTP streams (`GET /events`, `GET /count/stream`):
//! how many are open, and how many fell behind the change feed. A stream
//! that falls behind is the one place HTTP drops work on purpose (a slow
//! reader must not hold up the service), so an operator should see it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Which stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// `GET /events`: one that falls behind is closed.
    Events,
    /// `GET /count/stream`: one that falls behind counts again.
    Count,
}

impl Stream {
    const ALL: [Stream; 2] = [Stream::Events, Stream::Count];

    fn label(self) -> &'static str {
        match self {
            Stream::Events => "events",
            Stream::Count => "count",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: &'static str,
}

/// The two series, resolved per stream.
#[derive(Debug)]
pub(crate) struct Streams {
    open: [Gauge; 2],
    behind: [Counter; 2],
}

impl Streams {
    pub(crate) fn register(registry: &mut Registry) -> Streams {
        let open = Family::<StreamLabel, Gauge>::default();
        let behind = Family::<StreamLabel, Counter>::default();
        let label = |s: Stream| StreamLabel { stream: s.label() };
        let streams = Streams {
            open: Stream::ALL.map(|s| open.get_or_create_owned(&label(s))),
            behind: Stream::ALL.map(|s| behind.get_or_create_owned(&label(s))),
        };
        registry.register(
            "http_streams_open",
            "HTTP event and live-count streams open now",
            open,
        );
        registry.register(
            "http_streams_behind",
            "HTTP streams that fell behind the change feed (events: closed; count: counted again)",
            behind,
        );
        streams
    }

    /// Counts a stream as open until the guard is dropped with it.
    pub(crate) fn opened(&self, stream: Stream) -> OpenStream {
        let open = self.open[stream as usize].clone();
        open.inc();
        OpenStream { open }
    }

    /// The counter a stream's task moves when it falls behind.
    pub(crate) fn behind(&self, stream: Stream) -> Counter {
        self.behind[stream as usize].clone()
    }
}

/// An open stream, counted by [`Streams::opened`].
#[derive(Debug)]
pub(crate) struct OpenStream {
    open: Gauge,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.open.dec();
    }
}
