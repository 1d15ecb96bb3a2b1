//! The limits of an LLM-shaped service, counted the way the providers count them, service-wide
//! and per model.
//!
//! Each limit is an exact sliding window (the crate's `SlidingWindow`): at most `limit` counted in
//! any window of `windowMs` ending now. A provider's own limiter is a continuously refilling
//! bucket, which lets up to twice its limit through in one window (a full bucket, then its
//! refill); the sliding window is the stricter of the two, so a client proven within it is within
//! the provider's, and "at most the limit in any window" is a fact stats and clients can check.
//! The headers follow it exactly: `remaining` is the limit less what the last window counted,
//! `reset` the time until the window holds nothing (the quota whole again), `retry-after` the
//! time until the refused request would fit.
//!
//! What a request counts:
//! - OpenAI: 1 request; tokens = prompt tokens + `max_tokens`, its reservation, known at start
//!   and never given back.
//! - Anthropic: 1 request; input tokens = the prompt's; output tokens: the request must fit its
//!   `max_tokens`, and its answer's tokens are counted (the provider estimates from `max_tokens`
//!   and corrects when the answer ends; this mock draws the answer when the request starts, so it
//!   counts the corrected figure at once).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::config::{Limits, ProviderConfig};
use crate::limit::{Decision, Limiter, SlidingWindow};
use crate::stats::{LimitPeak, PeakWindow};

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counts {
    Requests,
    /// OpenAI's tokens per minute.
    Tokens,
    InputTokens,
    OutputTokens,
}

impl Counts {
    /// The name in stats.
    pub fn name(self) -> &'static str {
        match self {
            Counts::Requests => "requests",
            Counts::Tokens => "tokens",
            Counts::InputTokens => "inputTokens",
            Counts::OutputTokens => "outputTokens",
        }
    }
}

/// What one request asks of the limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cost {
    pub input: u64,
    /// The most it may answer (`max_tokens`).
    pub max_output: u64,
    /// What it will answer.
    pub output: u64,
}

impl Cost {
    /// What must fit for the request to be accepted.
    fn needed(&self, counts: Counts) -> u64 {
        match counts {
            Counts::Requests => 1,
            Counts::Tokens => self.input + self.max_output,
            Counts::InputTokens => self.input,
            Counts::OutputTokens => self.max_output,
        }
    }

    /// What is counted once it is.
    fn counted(&self, counts: Counts) -> u64 {
        match counts {
            Counts::OutputTokens => self.output,
            other => self.needed(other),
        }
    }
}

/// A limit's state at one instant, as the headers report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gauge {
    pub limit: u64,
    pub remaining: u64,
    /// Until the whole limit is free again.
    pub reset: Duration,
}

/// Every limit the headers report: a model's own where it has one, else the service's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Gauges {
    pub requests: Option<Gauge>,
    pub tokens: Option<Gauge>,
    pub input: Option<Gauge>,
    pub output: Option<Gauge>,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// `None` for the service-wide limit, else the model.
    pub model: Option<String>,
    pub counts: Counts,
    pub limit: u64,
    pub used: u64,
    pub requested: u64,
    /// Until it would fit; `None` when it never can (it needs more than the limit).
    pub retry_after: Option<Duration>,
}

#[derive(Debug)]
struct Meter {
    counts: Counts,
    window: SlidingWindow,
    peak: PeakWindow,
}

#[derive(Debug)]
struct Scope {
    meters: Vec<Meter>,
}

impl Scope {
    fn new(limits: &Limits, window: Duration) -> Self {
        let meter = |counts, limit: Option<u64>| {
            limit.map(|limit| Meter {
                counts,
                window: SlidingWindow::new(limit, window),
                peak: PeakWindow::new(window),
            })
        };
        Scope {
            meters: [
                meter(Counts::Requests, limits.rpm),
                meter(Counts::Tokens, limits.tpm),
                meter(Counts::InputTokens, limits.itpm),
                meter(Counts::OutputTokens, limits.otpm),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }

    /// The first limit `cost` does not fit, with the longest wait of all that it does not fit.
    fn refusal(&mut self, now: Instant, cost: &Cost, model: Option<&str>) -> Option<Refusal> {
        let mut refusal: Option<Refusal> = None;
        for meter in &mut self.meters {
            let needed = cost.needed(meter.counts);
            let state = meter.window.peek(now);
            if needed <= state.remaining {
                continue;
            }
            let retry_after = (needed <= meter.window.limit()).then(|| meter.window.wait_for(now, needed));
            match &mut refusal {
                None => {
                    refusal = Some(Refusal {
                        model: model.map(str::to_owned),
                        counts: meter.counts,
                        limit: meter.window.limit(),
                        used: meter.window.used(),
                        requested: needed,
                        retry_after,
                    });
                }
                Some(first) => {
                    first.retry_after = match (first.retry_after, retry_after) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
            }
        }
        refusal
    }

    fn take(&mut self, now: Instant, cost: &Cost) {
        for meter in &mut self.meters {
            let counted = cost.counted(meter.counts);
            let _: Decision = meter.window.try_acquire(now, counted);
            meter.peak.add(now, counted);
        }
    }

    fn gauge(&mut self, now: Instant, counts: Counts) -> Option<Gauge> {
        let meter = self.meters.iter_mut().find(|m| m.counts == counts)?;
        let state = meter.window.peek(now);
        Some(Gauge {
            limit: meter.window.limit(),
            remaining: state.remaining,
            reset: state.reset,
        })
    }

    fn peaks(&self, scope: &str) -> impl Iterator<Item = LimitPeak> + '_ {
        let scope = scope.to_owned();
        self.meters.iter().map(move |m| LimitPeak {
            scope: scope.clone(),
            counts: m.counts.name().to_owned(),
            limit: m.window.limit(),
            window_ms: m.peak.window_ms(),
            max_in_window: m.peak.peak(),
        })
    }
}

/// A service's limits and what they accepted.
#[derive(Debug)]
pub(crate) struct Quota {
    service: Scope,
    models: HashMap<String, Scope>,
    /// Requests accepted in any window, whether or not a limit counts them.
    accepted: PeakWindow,
    peak_concurrency: u64,
    input: u64,
    output: u64,
}

impl Quota {
    pub fn new(config: &ProviderConfig) -> Self {
        let window = Duration::from_millis(config.window_ms);
        Quota {
            service: Scope::new(&config.limits, window),
            models: config
                .models
                .iter()
                .map(|(name, limits)| (name.clone(), Scope::new(limits, window)))
                .collect(),
            accepted: PeakWindow::new(window),
            peak_concurrency: 0,
            input: 0,
            output: 0,
        }
    }

    /// Counts the request against every limit it falls under if it fits them all; otherwise
    /// counts nothing. Either way, the gauges after.
    pub fn admit(
        &mut self,
        now: Instant,
        model: &str,
        cost: &Cost,
        in_flight: u64,
    ) -> (Result<(), Refusal>, Gauges) {
        let mut refusal = self.service.refusal(now, cost, None);
        if refusal.is_none()
            && let Some(scope) = self.models.get_mut(model)
        {
            refusal = scope.refusal(now, cost, Some(model));
        }
        let verdict = match refusal {
            Some(refusal) => Err(refusal),
            None => {
                self.service.take(now, cost);
                if let Some(scope) = self.models.get_mut(model) {
                    scope.take(now, cost);
                }
                self.accepted.add(now, 1);
                self.peak_concurrency = self.peak_concurrency.max(in_flight);
                self.input += cost.input;
                self.output += cost.output;
                Ok(())
            }
        };
        (verdict, self.gauges(now, model))
    }

    fn gauges(&mut self, now: Instant, model: &str) -> Gauges {
        let mut model = self.models.get_mut(model);
        let service = &mut self.service;
        let mut gauge = |counts| {
            model
                .as_mut()
                .and_then(|m| m.gauge(now, counts))
                .or_else(|| service.gauge(now, counts))
        };
        Gauges {
            requests: gauge(Counts::Requests),
            tokens: gauge(Counts::Tokens),
            input: gauge(Counts::InputTokens),
            output: gauge(Counts::OutputTokens),
        }
    }

    /// The most requests accepted in any window, and the peak concurrency.
    pub fn accepted(&self) -> (u64, u64) {
        (self.accepted.peak(), self.peak_concurrency)
    }

    /// Tokens accepted (input, output).
    pub fn tokens(&self) -> (u64, u64) {
        (self.input, self.output)
    }

    /// Every limit's peak, the service's first, then the models' by name.
    pub fn peaks(&self) -> Vec<LimitPeak> {
        let mut models: Vec<_> = self.models.iter().collect();
        models.sort_by(|a, b| a.0.cmp(b.0));
        self.service
            .peaks("service")
            .chain(models.into_iter().flat_map(|(name, scope)| scope.peaks(name)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::config::Provider;

    fn openai(rpm: u64, tpm: u64) -> Quota {
        let mut config = ProviderConfig::new(Provider::Openai);
        config.limits.rpm = Some(rpm);
        config.limits.tpm = Some(tpm);
        config.window_ms = 1_000;
        Quota::new(&config)
    }

    fn cost(input: u64, max_output: u64) -> Cost {
        Cost {
            input,
            max_output,
            output: 1,
        }
    }

    #[test]
    fn gauges_count_down_and_reset_counts_to_the_window_emptying() {
        let mut quota = openai(3, 1_000);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (ok, g) = quota.admit(t0, "m", &cost(10, 90), 1);
        assert!(ok.is_ok());
        let requests = g.requests.unwrap();
        assert_eq!(
            (requests.limit, requests.remaining, requests.reset),
            (3, 2, ms(1000))
        );
        assert_eq!(g.tokens.unwrap().remaining, 900);
        let (_, g) = quota.admit(t0 + ms(400), "m", &cost(10, 90), 1);
        assert_eq!(g.requests.unwrap().remaining, 1);
        assert_eq!(g.requests.unwrap().reset, ms(1000), "until the newest leaves");
        let (_, g) = quota.admit(t0 + ms(700), "m", &cost(10, 90), 1);
        assert_eq!(
            (g.requests.unwrap().remaining, g.tokens.unwrap().remaining),
            (0, 700)
        );
        let (refused, g) = quota.admit(t0 + ms(800), "m", &cost(10, 90), 1);
        let refused = refused.unwrap_err();
        assert_eq!(refused.counts, Counts::Requests);
        assert_eq!(refused.retry_after, Some(ms(200)), "when the first leaves");
        assert_eq!(g.requests.unwrap().reset, ms(900));
        // The first request left the window: one fits again.
        let (ok, g) = quota.admit(t0 + ms(1000), "m", &cost(10, 90), 1);
        assert!(ok.is_ok());
        assert_eq!(g.requests.unwrap().remaining, 0);
    }

    #[test]
    fn a_reservation_that_does_not_fit_is_refused_and_counts_nothing() {
        let mut quota = openai(100, 1_000);
        let t0 = Instant::now();
        assert!(quota.admit(t0, "m", &cost(100, 800), 1).0.is_ok());
        let (refused, g) = quota.admit(t0, "m", &cost(50, 100), 1);
        let refused = refused.unwrap_err();
        assert_eq!(
            (refused.counts, refused.limit, refused.used, refused.requested),
            (Counts::Tokens, 1_000, 900, 150)
        );
        assert_eq!(g.tokens.unwrap().remaining, 100, "nothing was taken");
        assert_eq!(g.requests.unwrap().remaining, 99);
        assert!(
            quota.admit(t0, "m", &cost(50, 50), 1).0.is_ok(),
            "an exact fit is accepted"
        );
        let (never, _) = quota.admit(t0, "m", &cost(10, 1_000), 1);
        assert_eq!(
            never.unwrap_err().retry_after,
            None,
            "larger than the limit itself"
        );
    }

    #[test]
    fn anthropic_checks_max_tokens_but_counts_the_answer_and_models_have_their_own() {
        let mut config = ProviderConfig::new(Provider::Anthropic);
        config.limits.otpm = Some(1_000);
        config.models.insert(
            "small".to_owned(),
            Limits {
                itpm: Some(100),
                ..Default::default()
            },
        );
        let mut quota = Quota::new(&config);
        let t0 = Instant::now();
        let answered = Cost {
            input: 60,
            max_output: 1_000,
            output: 300,
        };
        let (ok, g) = quota.admit(t0, "small", &answered, 1);
        assert!(ok.is_ok());
        assert_eq!(g.output.unwrap().remaining, 700);
        assert_eq!(g.input.unwrap().remaining, 40, "the model's own limit");
        let (refused, _) = quota.admit(t0, "small", &answered, 1);
        assert_eq!(refused.unwrap_err().counts, Counts::OutputTokens, "1000 must fit");
        let (refused, _) = quota.admit(t0, "small", &cost(60, 10), 1);
        let refused = refused.unwrap_err();
        assert_eq!(
            (refused.model.as_deref(), refused.counts),
            (Some("small"), Counts::InputTokens)
        );
        assert!(
            quota.admit(t0, "other", &cost(60, 10), 1).0.is_ok(),
            "another model"
        );
        let peaks = quota.peaks();
        assert_eq!(peaks.len(), 2);
        assert_eq!(
            (peaks[0].scope.as_str(), peaks[0].max_in_window),
            ("service", 301)
        );
        assert_eq!((peaks[1].scope.as_str(), peaks[1].max_in_window), ("small", 60));
    }
}
