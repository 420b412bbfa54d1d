//! A stand-in for WordPress on one region's droplets, playing the part honestly: it reads
//! `DYNAMODB_REGION` from its env file at start and again on SIGHUP (what its agent's reload
//! command sends), serves `GET /healthz` (the application tier's health: up and configured, without
//! touching the database) and `POST /write?id=N` (a user's write: one item into the region it uses), and answers
//! 503 when its DynamoDB does not.
//!
//! ```text
//! app-standin --env-file F --pid-file P --region NAME=ENDPOINT [--region ...] [--table T]
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

struct App {
    env_file: String,
    table: String,
    clients: HashMap<String, aws_sdk_dynamodb::Client>,
    region: RwLock<Option<String>>,
}

impl App {
    fn reload(&self) {
        let text = std::fs::read_to_string(&self.env_file).unwrap_or_default();
        let region = dynamo_failover::adapters::envfile::read_value(&text, "DYNAMODB_REGION");
        match &region {
            Some(r) if self.clients.contains_key(r) => eprintln!("app: using DynamoDB in {r}"),
            // Like the shipped PHP snippet: no silent default, the application answers 503.
            _ => eprintln!(
                "app: {} does not name a known region; answering 503",
                self.env_file
            ),
        }
        *self.region.write().unwrap() = region;
    }

    fn client(&self) -> Option<(String, aws_sdk_dynamodb::Client)> {
        let r = self.region.read().unwrap().clone()?;
        let c = self.clients.get(&r)?.clone();
        Some((r, c))
    }
}

/// The application tier's health, as a load balancer's health check sees it: up, and told which
/// database region to use. It does not touch the database: a target region's application is
/// checked before traffic moves there, while it still points at the failed region.
async fn healthz(State(app): State<Arc<App>>) -> (StatusCode, String) {
    match app.client() {
        Some((region, _)) => (StatusCode::OK, format!("ok, using DynamoDB in {region}\n")),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database region is not configured\n".into(),
        ),
    }
}

#[derive(Deserialize)]
struct WriteQuery {
    id: u64,
}

async fn write(State(app): State<Arc<App>>, Query(q): Query<WriteQuery>) -> (StatusCode, String) {
    let Some((region, c)) = app.client() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database region is not configured\n".into(),
        );
    };
    let put = c
        .put_item()
        .table_name(&app.table)
        .item("pk", AttributeValue::S(format!("user-write#{:08}", q.id)))
        .item("region", AttributeValue::S(region.clone()))
        .send();
    match tokio::time::timeout(Duration::from_secs(1), put).await {
        Ok(Ok(_)) => (StatusCode::OK, format!("{region}\n")),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("DynamoDB in {region} refused the write\n"),
        ),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut env_file = None;
    let mut pid_file = None;
    let mut table = "wordpress_posts".to_string();
    let mut regions = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().expect("a value after the option");
        match a.as_str() {
            "--env-file" => env_file = Some(v()),
            "--pid-file" => pid_file = Some(v()),
            "--table" => table = v(),
            "--region" => {
                let r = v();
                let (name, ep) = r.split_once('=').expect("--region NAME=ENDPOINT");
                regions.push((name.to_string(), ep.to_string()));
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let shared = testkit::sdk_config().await;
    let mut clients = HashMap::new();
    for (name, ep) in regions {
        let conf = aws_sdk_dynamodb::config::Builder::from(&shared)
            .region(aws_sdk_dynamodb::config::Region::new(name.clone()))
            .endpoint_url(ep)
            .timeout_config(
                aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(Duration::from_millis(800))
                    .connect_timeout(Duration::from_millis(300))
                    .build(),
            )
            .build();
        clients.insert(name, aws_sdk_dynamodb::Client::from_conf(conf));
    }
    let app = Arc::new(App {
        env_file: env_file.expect("--env-file"),
        table,
        clients,
        region: RwLock::new(None),
    });
    app.reload();
    if let Some(p) = pid_file {
        std::fs::write(p, std::process::id().to_string()).expect("write the pid file");
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("a SIGHUP handler");
    {
        let app = app.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                app.reload();
            }
        });
    }
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/write", post(write))
        .with_state(app);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    eprintln!("app: listening on {}", l.local_addr().unwrap());
    axum::serve(l, router).await.unwrap();
}
