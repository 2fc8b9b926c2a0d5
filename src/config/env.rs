//! Reading the SPEC 8 variables, one group of settings at a time. `get` answers a variable's
//! value, with blank values already treated as unset.

use super::*;

/// `ENVIRONMENT`, `KAFKA_BROKERS`, `KAFKA_CONSUMER_GROUP`, `NODE_ID`.
pub(super) fn identity(
    c: &mut Config,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(v) = get("ENVIRONMENT") {
        c.environment = v.parse().map_err(|d| err("ENVIRONMENT", d))?;
    }
    if let Some(v) = get("KAFKA_BROKERS") {
        c.brokers = v
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    if let Some(v) = get("KAFKA_CONSUMER_GROUP") {
        c.consumer_group = v;
    }
    if let Some(v) = get("NODE_ID") {
        c.node_id = v
            .trim()
            .parse()
            .map_err(|_| err("NODE_ID", "must be an unsigned 32-bit integer"))?;
    }
    Ok(())
}

/// TLS (`KAFKA_TLS_ENABLED` and the certificate files) and SASL.
pub(super) fn security(
    c: &mut Config,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let tls_on = match get("KAFKA_TLS_ENABLED") {
        Some(v) => parse_bool("KAFKA_TLS_ENABLED", &v)?,
        None => false,
    };
    if tls_on {
        c.tls = Some(Tls {
            ca_cert: get("KAFKA_CA_CERT").map(PathBuf::from),
            client_cert: get("KAFKA_CLIENT_CERT").map(PathBuf::from),
            client_key: get("KAFKA_CLIENT_KEY").map(PathBuf::from),
        });
    }
    if let Some(user) = get("KAFKA_SASL_USERNAME") {
        let mechanism = match get("KAFKA_SASL_MECHANISM")
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("SCRAM-SHA-512") => SaslMechanism::ScramSha512,
            Some("SCRAM-SHA-256") => SaslMechanism::ScramSha256,
            Some("PLAIN") => SaslMechanism::Plain,
            Some(o) => {
                return Err(err(
                    "KAFKA_SASL_MECHANISM",
                    format!("must be SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN, not `{o}`"),
                ))
            }
        };
        let password = get("KAFKA_SASL_PASSWORD").ok_or_else(|| {
            err(
                "KAFKA_SASL_PASSWORD",
                "required when KAFKA_SASL_USERNAME is set",
            )
        })?;
        c.sasl = Some(Sasl {
            mechanism,
            username: user,
            password: Secret::new(password),
        });
    } else if get("KAFKA_SASL_MECHANISM").is_some() {
        return Err(err(
            "KAFKA_SASL_USERNAME",
            "required when KAFKA_SASL_MECHANISM is set",
        ));
    }
    Ok(())
}

/// `KAFKA_REQUEST_TIMEOUT_MS`, the topic overrides and `KAFKA_DLQ_TOPIC`.
pub(super) fn timeouts_and_topics(
    c: &mut Config,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(v) = get("KAFKA_REQUEST_TIMEOUT_MS") {
        c.request_timeout = Duration::from_millis(parse_num("KAFKA_REQUEST_TIMEOUT_MS", &v, 1)?);
    }
    for k in Kind::ALL {
        if let Some(t) = get(k.topic_env()) {
            c.topics.insert(k, t);
        }
    }
    if let Some(v) = get("KAFKA_DLQ_TOPIC") {
        c.dlq_topic = v;
    }
    Ok(())
}

/// The producer's knobs (SPEC 5, rate caps) and the shutdown deadline.
pub(super) fn producer(
    c: &mut Config,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(v) = get("KAFKA_PRODUCER_IDEMPOTENT") {
        c.producer.idempotent = parse_bool("KAFKA_PRODUCER_IDEMPOTENT", &v)?;
    }
    if let Some(v) = get("KAFKA_PRODUCER_COMPRESSION") {
        c.producer.compression = v
            .parse()
            .map_err(|d| err("KAFKA_PRODUCER_COMPRESSION", d))?;
    }
    if let Some(v) = get("KAFKA_RETRY_BACKOFF_MS") {
        c.producer.retry_backoff =
            Duration::from_millis(parse_num("KAFKA_RETRY_BACKOFF_MS", &v, 0)?);
    }
    if let Some(v) = get("KAFKA_MAX_RETRIES") {
        c.producer.max_retries = parse_num("KAFKA_MAX_RETRIES", &v, 0)? as usize;
    }
    if let Some(v) = get("KAFKA_DELIVERY_TIMEOUT_MS") {
        c.producer.delivery_timeout =
            Duration::from_millis(parse_num("KAFKA_DELIVERY_TIMEOUT_MS", &v, 1)?);
    }
    for (var, slot) in [
        ("KAFKA_BREAKER_FAILURES", &mut c.producer.breaker_failures),
        ("KAFKA_BREAKER_SUCCESSES", &mut c.producer.breaker_successes),
    ] {
        if let Some(v) = get(var) {
            let n = parse_num(var, &v, 1)?;
            *slot = u32::try_from(n).map_err(|_| err(var, "must be below 2^32"))?;
        }
    }
    if let Some(v) = get("KAFKA_BREAKER_OPEN_MS") {
        c.producer.breaker_open_for =
            Duration::from_millis(parse_num("KAFKA_BREAKER_OPEN_MS", &v, 1)?);
    }
    for (var, slot) in [
        (
            "KAFKA_PRODUCER_MAX_RECORDS_PER_SEC",
            &mut c.producer.max_records_per_sec,
        ),
        (
            "KAFKA_PRODUCER_MAX_BYTES_PER_SEC",
            &mut c.producer.max_bytes_per_sec,
        ),
    ] {
        if let Some(v) = get(var) {
            let n = parse_num(var, &v, 1)?;
            *slot = Some(u32::try_from(n).map_err(|_| err(var, "must be below 2^32"))?);
        }
    }
    if let Some(v) = get("MESHBUS_SHUTDOWN_TIMEOUT_MS") {
        c.shutdown_timeout =
            Duration::from_millis(parse_num("MESHBUS_SHUTDOWN_TIMEOUT_MS", &v, 0)?);
    }
    Ok(())
}

/// The consumer's and its group's knobs.
pub(super) fn consumer(
    c: &mut Config,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    c.consumer.group_instance_id = get("KAFKA_GROUP_INSTANCE_ID").map(|v| v.trim().to_string());
    if let Some(v) = get("KAFKA_GROUP_PROTOCOL") {
        c.consumer.group_protocol = match v.trim().to_ascii_lowercase().as_str() {
            "classic" => GroupProtocol::Classic,
            "consumer" => GroupProtocol::Consumer,
            _ => {
                return Err(err(
                    "KAFKA_GROUP_PROTOCOL",
                    format!("must be classic or consumer, not `{v}`"),
                ))
            }
        };
    }
    if let Some(v) = get("KAFKA_CONSUMER_RETRY_MAX") {
        c.consumer.retry_max = parse_num("KAFKA_CONSUMER_RETRY_MAX", &v, 0)? as usize;
    }
    let warmup = &mut c.consumer.warmup;
    if let Some(v) = get("KAFKA_REPLAY_WARMUP_MAX_RECORDS") {
        warmup.max_records = parse_num("KAFKA_REPLAY_WARMUP_MAX_RECORDS", &v, 0)?;
    }
    if let Some(v) = get("KAFKA_REPLAY_WARMUP_MAX_MS") {
        warmup.max_time = Duration::from_millis(parse_num("KAFKA_REPLAY_WARMUP_MAX_MS", &v, 1)?);
    }
    if let Some(v) = get("KAFKA_REPLAY_WARMUP_THREADS") {
        warmup.threads = parse_num("KAFKA_REPLAY_WARMUP_THREADS", &v, 0)?.min(1024) as usize;
    }
    Ok(())
}
