//! Every config key some bucky tool reads, so that a misspelt key is reported instead of being
//! silently ignored. The names are the original's; new keys follow its `area_thing` style.
//!
//! Append new keys to the group they belong to (or a new commented group at the end).

/// All known config keys, grouped by where they come from.
pub const KNOWN_KEYS: &[&str] = &[
    // bucky 2.2.1 `cfg.py` defaults (spec §1.3), in the spec's order.
    "debug",
    "log_level",
    "nice",
    "uid",
    "gid",
    "directory",
    "metricsd_ip",
    "metricsd_port",
    "metricsd_enabled",
    "metricsd_default_interval",
    "metricsd_handlers",
    "collectd_ip",
    "collectd_port",
    "collectd_enabled",
    "collectd_types",
    "collectd_converters",
    "collectd_use_entry_points",
    "collectd_security_level",
    "collectd_auth_file",
    "statsd_ip",
    "statsd_port",
    "statsd_enabled",
    "statsd_flush_time",
    "statsd_legacy_namespace",
    "statsd_global_prefix",
    "statsd_prefix_counter",
    "statsd_prefix_timer",
    "statsd_prefix_gauge",
    "statsd_persistent_gauges",
    "statsd_gauges_savefile",
    "graphite_ip",
    "graphite_port",
    "graphite_max_reconnects",
    "graphite_reconnect_delay",
    "graphite_backoff_factor",
    "graphite_backoff_max",
    "graphite_pickle_enabled",
    "graphite_pickle_buffer_size",
    "full_trace",
    "name_prefix",
    "name_prefix_parts",
    "name_postfix",
    "name_postfix_parts",
    "name_replace_char",
    "name_strip_duplicates",
    "name_host_trim",
    "custom_clients",
    "processor",
    "processor_drop_on_error",
    // bucky 2.3.0 and HEAD additions (spec §1.3, "2.3.0/HEAD add").
    "process_join_timeout",
    "max_sample_queue",
    "sentry_enabled",
    "sentry_dsn",
    "sentry_log_level",
    "sentry_auto_log_stacks",
    "collectd_counter_eq_derive",
    "collectd_workers",
    "statsd_metadata",
    "statsd_prefix_set",
    "statsd_delete_idlestats",
    "statsd_delete_counters",
    "statsd_delete_timers",
    "statsd_delete_sets",
    "statsd_onlychanged_gauges",
    "statsd_percentile_thresholds",
    "statsd_timer_mean",
    "statsd_timer_upper",
    "statsd_timer_lower",
    "statsd_timer_count",
    "statsd_timer_count_ps",
    "statsd_timer_sum",
    "statsd_timer_sum_squares",
    "statsd_timer_median",
    "statsd_timer_std",
    "graphite_enabled",
    "influxdb_enabled",
    "influxdb_hosts",
    // New in the Rust bucky: carbon output (decisions.md §7).
    "graphite_queue_size",
    "graphite_shutdown_timeout",
    "graphite_resend_window",
    "graphite_flush_interval",
    // New: bucky-carbon for Graphite clusters (consistent hashing, durable spool).
    "graphite_destinations",
    "graphite_replication_factor",
    "graphite_diverse_replicas",
    "graphite_hash_type",
    "graphite_spool_dir",
    "graphite_spool_max_bytes",
    "graphite_spool_replay_rate",
    // New: every tool's own counters as samples (decisions.md §2).
    "self_metrics_interval",
    "self_metrics_prefix",
    // New: the processor without Python (decisions.md §6).
    "processor_rules",
    "processor_lua",
    // New: StatsD (decisions.md §3).
    "statsd_tcp_enabled",
    "statsd_tcp_port",
    "statsd_recv_buffer",
    "statsd_threads",
    "statsd_max_keys",
    "statsd_tags_enabled",
    "statsd_tcp_max_connections",
    "statsd_max_values",
    // New: collectd (decisions.md §4, bounded rate cache).
    "collectd_rate_expiry",
    "collectd_max_series",
    "collectd_recv_buffer",
    "collectd_lua",
    // New: MetricsD (decisions.md §5, a bounded metric table).
    "metricsd_max_metrics",
];

/// Whether `key` is a config key some bucky tool reads.
pub fn is_known(key: &str) -> bool {
    KNOWN_KEYS.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn no_duplicates() {
        let mut seen = HashSet::new();
        for k in KNOWN_KEYS {
            assert!(seen.insert(k), "duplicate key {k}");
        }
    }

    #[test]
    fn names_are_python_identifiers() {
        // Every key must be assignable in an original (Python) config file.
        for k in KNOWN_KEYS {
            assert!(!k.is_empty());
            assert!(k
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
            assert!(!k.starts_with(|c: char| c.is_ascii_digit()));
        }
    }

    #[test]
    fn holds_the_keys_of_every_source() {
        for k in [
            "statsd_port",
            "processor",
            "custom_clients",
            "collectd_converters",
            "collectd_use_entry_points",
            "statsd_timer_sum_squares",
            "influxdb_hosts",
            "graphite_resend_window",
            "collectd_rate_expiry",
        ] {
            assert!(is_known(k), "{k}");
        }
        assert!(!is_known("statsd_prot"));
    }
}
