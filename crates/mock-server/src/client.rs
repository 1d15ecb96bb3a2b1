//! A small typed client for a running simulator, as the original's `createMockService`.

use serde_json::Value;

use crate::config::ServiceConfig;
use crate::error::Error;
use crate::stats::Stats;

/// Talks to a mock server's admin routes over HTTP.
#[derive(Clone, Debug)]
pub struct MockClient {
    base: String,
    http: reqwest::Client,
}

impl MockClient {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:19999`).
    pub fn new(base: impl Into<String>) -> Self {
        MockClient {
            base: base.into().trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Creates or replaces service `name`.
    pub async fn create_service(&self, name: &str, config: &ServiceConfig) -> Result<(), Error> {
        let response = self
            .http
            .post(format!("{}/service/{name}", self.base))
            .json(&config.to_json())
            .send()
            .await?;
        check(response).await.map(|_| ())
    }

    /// Deletes service `name`.
    pub async fn delete_service(&self, name: &str) -> Result<(), Error> {
        let response = self
            .http
            .delete(format!("{}/service/{name}", self.base))
            .send()
            .await?;
        check(response).await.map(|_| ())
    }

    /// Service `name`'s statistics.
    pub async fn stats(&self, name: &str) -> Result<Stats, Error> {
        let response = self
            .http
            .get(format!("{}/service/{name}/stats", self.base))
            .send()
            .await?;
        let body = check(response).await?;
        serde_json::from_value(body).map_err(|e| Error::Status {
            status: 200,
            body: format!("unexpected stats: {e}"),
        })
    }

    /// Asks the server to stop.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let response = self.http.post(format!("{}/shutdown", self.base)).send().await?;
        check(response).await.map(|_| ())
    }
}

async fn check(response: reqwest::Response) -> Result<Value, Error> {
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        return Err(Error::Status {
            status: status.as_u16(),
            body,
        });
    }
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}
