//! Sending probe requests within the request and time budgets, and what each answer means.

use std::time::{Duration, Instant};

use http::{HeaderMap, Method};

use super::{DetectError, DetectOptions};

/// What one probe's answer says about the API's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 2xx.
    Accepted,
    /// 429: over the rate limit.
    RateLimited,
    /// 502, 503, 504: too many at once.
    Overloaded,
    /// Another 5xx or a 408: the API's own noise, evidence of nothing.
    Noise,
}

/// One probe's answer.
#[derive(Clone, Debug)]
pub struct Probe {
    pub answer: Answer,
    pub status: u16,
    pub headers: HeaderMap,
    /// When the response arrived: rates are timed from arrivals, which the server's clock
    /// is closer to than our send times.
    pub arrived: Instant,
}

/// Sends probes and keeps the books.
#[derive(Debug)]
pub struct Prober {
    client: reqwest::Client,
    url: String,
    method: Method,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    max_requests: u32,
    deadline: Instant,
    used: u32,
}

impl Prober {
    pub fn new(options: &DetectOptions) -> Result<Prober, DetectError> {
        let client = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .pool_max_idle_per_host(options.max_concurrency as usize)
            .build()
            .map_err(|error| DetectError::Client(error.to_string()))?;
        Ok(Prober {
            client,
            url: options.url.clone(),
            method: options.method.clone(),
            headers: options.headers.clone(),
            body: options.body.clone(),
            max_requests: options.max_requests,
            deadline: Instant::now() + options.max_duration,
            used: 0,
        })
    }

    /// Requests sent so far.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// Requests still allowed.
    pub fn remaining(&self) -> u32 {
        self.max_requests.saturating_sub(self.used)
    }

    /// Time still allowed.
    pub fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sends `n` requests at once (a burst), if the budget allows all of them.
    pub async fn burst(&mut self, n: u32) -> Result<Vec<Probe>, DetectError> {
        if n > self.remaining() || self.time_left().is_zero() {
            return Err(DetectError::BudgetSpent);
        }
        self.used += n;
        let sends = (0..n).map(|_| self.send_one());
        futures::future::join_all(sends).await.into_iter().collect()
    }

    /// Sends one request (counted against the budget by the caller's reservation).
    pub async fn one(&mut self) -> Result<Probe, DetectError> {
        if self.remaining() == 0 {
            return Err(DetectError::BudgetSpent);
        }
        self.used += 1;
        self.send_one().await
    }

    /// Reserves one request of the budget for a send made with [`Prober::send_reserved`].
    pub fn reserve(&mut self) -> bool {
        if self.remaining() == 0 {
            return false;
        }
        self.used += 1;
        true
    }

    /// A send whose budget was reserved; usable concurrently.
    pub fn send_reserved(&self) -> impl Future<Output = Result<Probe, DetectError>> + use<> {
        let request = self.request();
        async move { answer(request.send().await).await }
    }

    fn request(&self) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .request(self.method.clone(), &self.url)
            .headers(self.headers.clone());
        if let Some(body) = &self.body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        request
    }

    async fn send_one(&self) -> Result<Probe, DetectError> {
        answer(self.request().send().await).await
    }
}

/// Turns a response into an [`Answer`], or stops detection: a refused connection or a 4xx other
/// than 429 means the requests are wrong, and nothing about limits can be learned from them.
async fn answer(sent: Result<reqwest::Response, reqwest::Error>) -> Result<Probe, DetectError> {
    let response = sent.map_err(|error| {
        if error.is_timeout() {
            DetectError::Unreachable("a request timed out".into())
        } else {
            DetectError::Unreachable(without_url(&error))
        }
    })?;
    let arrived = Instant::now();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let answer = match status {
        200..=299 => Answer::Accepted,
        429 => Answer::RateLimited,
        502..=504 => Answer::Overloaded,
        408 | 500..=599 => Answer::Noise,
        _ => {
            let body = response.text().await.unwrap_or_default();
            let excerpt: String = body.chars().take(200).collect();
            return Err(DetectError::Refused {
                status,
                body: excerpt,
            });
        }
    };
    Ok(Probe {
        answer,
        status,
        headers,
        arrived,
    })
}

fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "the endpoint");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// How many probes got each answer.
pub fn count(probes: &[Probe], answer: Answer) -> u32 {
    probes.iter().filter(|p| p.answer == answer).count() as u32
}
