//! `agentmux_cluster_state_*`: the Redis link of a gateway that shares
//! state with other instances. Registered only when `[cluster_state]` is
//! configured.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    /// `lease`, `heartbeat`, `session`, `publish`, `config`.
    command: &'static str,
    /// `ok`, `error`, `timeout`, `skipped` (not sent: Redis known down).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    /// `config` or `circuits`.
    channel: &'static str,
    /// `sent` or `received`.
    direction: &'static str,
}

/// What a Redis command ended as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandResult {
    /// Answered.
    Ok,
    /// Failed (connection refused, reset, script error).
    Error,
    /// No answer within `command_timeout`.
    Timeout,
    /// Not sent because Redis is known to be unreachable.
    Skipped,
}

impl CommandResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Skipped => "skipped",
        }
    }
}

/// Handles of the cluster-state families.
#[derive(Clone, Debug)]
pub struct ClusterStateMetrics {
    /// 1 while Redis answers, 0 while the instance runs on local state.
    pub connected: Gauge,
    /// Live instances seen in Redis at the last heartbeat.
    pub instances: Gauge,
    commands: Family<CommandLabels, Counter>,
    messages: Family<MessageLabels, Counter>,
}

impl ClusterStateMetrics {
    pub(super) fn register(r: &mut Registry) -> Self {
        let m = Self {
            connected: Gauge::default(),
            instances: Gauge::default(),
            commands: Family::default(),
            messages: Family::default(),
        };
        r.register(
            "cluster_state_connected",
            "1 while Redis answers, 0 while this instance runs on local state",
            m.connected.clone(),
        );
        r.register(
            "cluster_state_instances",
            "Live gateway instances seen in Redis at the last heartbeat",
            m.instances.clone(),
        );
        r.register(
            "cluster_state_commands",
            "Redis commands by kind and result",
            m.commands.clone(),
        );
        r.register(
            "cluster_state_messages",
            "Pub/sub messages by channel and direction",
            m.messages.clone(),
        );
        m
    }

    /// Counts one command (rare enough to look the label set up).
    pub fn command(&self, command: &'static str, result: CommandResult) {
        self.commands
            .get_or_create(&CommandLabels {
                command,
                result: result.as_str(),
            })
            .inc();
    }

    /// Counts one pub/sub message.
    pub fn message(&self, channel: &'static str, direction: &'static str) {
        self.messages.get_or_create(&MessageLabels { channel, direction }).inc();
    }
}
