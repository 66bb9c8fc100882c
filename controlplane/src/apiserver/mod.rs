//! The Kubernetes API server: HTTPS (rustls, ring) with bearer-token auth, discovery,
//! OpenAPI v3, and generic REST over the revisioned store for the resources in
//! `registry.rs`. Requests are parsed into commands (`request.rs`) apart from their effects
//! (`handlers/`). Nodes join with a join token (`jointoken.rs`, `join.rs`) and get a client
//! certificate, their identity on the node port (`nodetls.rs`); a node that knows only the
//! CA's hash learns the CA from `clusterinfo.rs`. Pod logs, exec, attach and port-forward
//! reach the node through its stream tunnel (`stream/`). See `docs/design/004-apiserver.md`
//! and `015-streams.md`.

mod admit;
mod auth;
mod authz;
mod client;
mod clusterinfo;
mod defaults;
mod discovery;
mod error;
mod handlers;
mod join;
mod jointoken;
mod managed;
mod metrics;
mod nodetls;
mod nodetoken;
mod openapi;
mod patch;
mod protobuf;
mod registry;
mod request;
mod selector;
mod services;
mod status;
mod strategic;
mod stream;
mod table;
mod tls;
mod validate;
mod watch;
mod watchcache;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use client::{Change, Client, Kind, Object, ObjectList};
pub use clusterinfo::CA_HASH_FILE;
pub use error::ApiServerError;
pub use handlers::AppState;
pub use join::{DEFAULT_TOKEN_TTL, NODE_CERT_VALIDITY};
pub use jointoken::{TOKEN_FILE as JOIN_TOKEN_FILE, check_format as check_join_token};
pub use nodetls::{NodeTls, NodeTlsError, node_name};
pub use request::{DeleteOptions, Propagation};
pub use services::{PortRange, ServiceAllocator, ServiceCidr};
pub use status::ApiError;

use crate::store::{EmbeddedStore, EtcdStore, Store, StoreError};

/// The Kubernetes minor version the server reports (and whose types it serves).
pub const KUBERNETES_MINOR: &str = "33";

/// How to run the API server.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// Where the store (embedded), the PKI and the kubeconfig live.
    pub data_dir: PathBuf,
    /// The HTTPS listen address (port 0 picks a free one).
    pub listen: SocketAddr,
    /// etcd endpoints; empty selects the embedded store.
    pub etcd: Vec<String>,
    /// Extra names or IPs for the serving certificate.
    pub extra_sans: Vec<String>,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// The largest accepted request body.
    pub max_body_bytes: usize,
    /// The range ClusterIPs come from (`--service-cidr`).
    pub service_cidr: ServiceCidr,
    /// The range NodePorts come from (`--service-node-port-range`).
    pub node_ports: PortRange,
    /// Lifetime of the join token written to `DATA_DIR/join-token` (`None`: never expires).
    pub join_token_ttl: Option<Duration>,
    /// A join token chosen in advance (`--join-token`): stored and written to
    /// `DATA_DIR/join-token` instead of a generated one.
    pub join_token: Option<String>,
}

impl ApiServerConfig {
    /// Defaults: 127.0.0.1:6443, embedded store, 60 s bookmarks, 3 MiB bodies, Services
    /// in 10.96.0.0/12 with node ports 30000-32767, a join token valid for 24 hours.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ApiServerConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 6443)),
            etcd: Vec::new(),
            extra_sans: Vec::new(),
            bookmark_interval: Duration::from_secs(60),
            max_body_bytes: 3 * 1024 * 1024,
            service_cidr: ServiceCidr::parse("10.96.0.0/12").expect("the default CIDR parses"),
            node_ports: PortRange::default(),
            join_token_ttl: Some(join::DEFAULT_TOKEN_TTL),
            join_token: None,
        }
    }
}

/// A started server.
pub struct RunningApiServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// `DATA_DIR/kubeconfig`, pointing at `addr` with the admin token.
    pub kubeconfig: PathBuf,
    /// The admin bearer token.
    pub token: String,
    /// PEM of the CA that signed the serving certificate.
    pub ca_pem: String,
    /// The join token in `DATA_DIR/join-token` (valid at start).
    pub join_token: String,
    /// The CA's pin (`sha256:` + hex of its SubjectPublicKeyInfo), also in
    /// `DATA_DIR/ca-cert-hash`: what a node passes as `--ca-cert-hash`.
    pub ca_cert_hash: String,
    /// TLS of the node (gRPC) port: this server's identity, node client certificates required.
    pub node_tls: NodeTls,
    state: AppState,
    handle: Handle<SocketAddr>,
    task: JoinHandle<Result<(), ApiServerError>>,
}

impl RunningApiServer {
    /// The server's shared state (store, allocators), for services beside the HTTP API.
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// An in-process client of this server (what the controllers use).
    pub fn client(&self) -> Client {
        Client::new(self.state.clone())
    }

    /// Stops accepting connections, lets in-flight requests finish briefly, and waits.
    pub async fn shutdown(self) -> Result<(), ApiServerError> {
        self.handle.graceful_shutdown(Some(Duration::from_secs(2)));
        self.wait().await
    }

    /// Waits until the server stops.
    pub async fn wait(self) -> Result<(), ApiServerError> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(ApiServerError::Serve(std::io::Error::other(
                join.to_string(),
            ))),
        }
    }
}

async fn open_store(config: &ApiServerConfig) -> Result<Arc<dyn Store>, ApiServerError> {
    if config.etcd.is_empty() {
        Ok(Arc::new(EmbeddedStore::open(&config.data_dir)?))
    } else {
        Ok(Arc::new(EtcdStore::connect(&config.etcd, "/skiff").await?))
    }
}

/// Creates the namespaces every cluster has (`default`, `kube-system`, …) if missing.
async fn ensure_namespaces(store: &dyn Store) -> Result<(), ApiServerError> {
    let Some(namespaces) = registry::find("", "v1", "namespaces") else {
        return Ok(());
    };
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let body = json!({"metadata": {"name": name}});
        let opts = request::WriteOptions::default();
        let Ok(object) = admit::prepare_create(namespaces, body, None, Timestamp::now(), &opts)
        else {
            continue;
        };
        let bytes = serde_json::to_vec(&object).unwrap_or_default();
        match store.create(&namespaces.key(None, name), bytes).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Opens the store and credentials, binds, and serves in a background task.
pub async fn start(config: ApiServerConfig) -> Result<RunningApiServer, ApiServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ApiServerError::Io {
        op: "create",
        path: config.data_dir.clone(),
        source,
    })?;
    let store = open_store(&config).await?;
    start_with_store(config, store).await
}

/// As `start`, over a store the caller opened.
pub async fn start_with_store(
    config: ApiServerConfig,
    store: Arc<dyn Store>,
) -> Result<RunningApiServer, ApiServerError> {
    ensure_namespaces(store.as_ref()).await?;
    let pki = tls::load_or_create(&config.data_dir, &config.extra_sans)?;
    let tls_config = RustlsConfig::from_config(tls::server_config(&pki)?);
    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|source| ApiServerError::Bind {
            addr: config.listen,
            source,
        })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ApiServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ApiServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let host = if addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
    } else {
        addr
    };
    let kubeconfig = tls::write_kubeconfig(&config.data_dir, &format!("https://{host}"), &pki)?;
    let services = Arc::new(ServiceAllocator::new(
        config.service_cidr,
        config.node_ports,
    ));
    services
        .ensure_kubernetes_service(store.as_ref(), host)
        .await
        .map_err(|e| ApiServerError::Bootstrap(e.message))?;
    let state = AppState {
        store,
        bookmark_interval: config.bookmark_interval,
        max_body_bytes: config.max_body_bytes,
        services,
        metrics: Arc::new(metrics::Metrics::default()),
        watch_lines: Arc::default(),
        tunnels: Arc::new(crate::node::Tunnels::default()),
    };
    let join_token = match &config.join_token {
        Some(token) => {
            jointoken::ensure_given(
                state.store.as_ref(),
                &config.data_dir,
                token,
                config.join_token_ttl,
            )
            .await?
        }
        None => {
            jointoken::ensure_file(
                state.store.as_ref(),
                &config.data_dir,
                config.join_token_ttl,
            )
            .await?
        }
    };
    let ca_cert_hash = clusterinfo::write_hash(&config.data_dir, &pki)?;
    let node_tls = NodeTls::from_pki(&pki).ok_or_else(|| ApiServerError::Pem {
        path: config.data_dir.join("pki/ca.crt"),
        reason: "no CA certificate in the serving chain".into(),
    })?;
    let auth = auth::Authenticator {
        admin_token: Arc::from(pki.token.as_str()),
        store: state.store.clone(),
    };
    let joins = join::JoinState {
        store: state.store.clone(),
        issuer: pki.ca_issuer.clone(),
        ca_pem: Arc::from(pki.ca_pem.as_str()),
        max_body_bytes: config.max_body_bytes,
    };
    let cluster_info = clusterinfo::ClusterInfoState::new(&pki.ca_pem);
    let app = router(state.clone(), joins, cluster_info, auth);
    let handle = Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls_config)
        .map_err(|source| ApiServerError::Bind { addr, source })?
        .handle(handle.clone());
    let task = tokio::spawn(async move {
        server
            .serve(app.into_make_service())
            .await
            .map_err(ApiServerError::Serve)
    });
    tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "API server listening");
    Ok(RunningApiServer {
        addr,
        kubeconfig,
        token: pki.token,
        ca_pem: pki.ca_pem,
        join_token,
        ca_cert_hash,
        node_tls,
        state,
        handle,
        task,
    })
}

/// The routes: fixed endpoints, then everything under `/api` and `/apis` via the parser.
fn router(
    state: AppState,
    joins: join::JoinState,
    cluster_info: clusterinfo::ClusterInfoState,
    auth: auth::Authenticator,
) -> Router {
    let metrics = state.metrics.clone();
    let join_routes = Router::new()
        .route(skiff_api::join::JOIN_PATH, post(join::join))
        .route(skiff_api::join::JOIN_TOKENS_PATH, post(join::mint_token))
        .with_state(joins);
    let discovery_routes = Router::new()
        .route(
            skiff_api::join::CLUSTER_INFO_PATH,
            get(clusterinfo::cluster_info),
        )
        .with_state(cluster_info);
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/openapi/v3", get(openapi_root))
        .route("/openapi/v3/{*rest}", get(openapi_doc))
        .route("/skiff/v1/nodes/{name}/token", post(mint_node_token))
        .route("/metrics", get(metrics_text))
        .fallback(handlers::handle)
        .with_state(state)
        .merge(join_routes)
        .merge(discovery_routes)
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

/// The request decoders and patchers on their own, for fuzz targets: none may panic,
/// whatever the bytes.
pub mod decoders {
    use serde_json::Value;

    use super::status::ApiError;

    /// Decodes a `k8s\0` + `runtime.Unknown` protobuf body into the object's JSON.
    pub fn protobuf(body: &[u8]) -> Result<Value, String> {
        super::protobuf::decode(body).map_err(|e| e.to_string())
    }

    /// Applies a strategic merge patch.
    pub fn strategic_merge(object: &Value, patch: &Value) -> Result<Value, ApiError> {
        super::strategic::merge(object, patch)
    }

    /// Decodes a byte stream as SPDY/3.1 frames (header blocks inflated with the SPDY
    /// dictionary through one zlib stream, as a connection does); the frames decoded.
    pub fn spdy_frames(data: &[u8]) -> Result<usize, String> {
        super::stream::spdy::decode_all(data)
            .map(|frames| frames.len())
            .map_err(|e| e.to_string())
    }

    /// Inflates and parses one SPDY header block.
    pub fn spdy_header_block(block: &[u8]) -> Result<usize, String> {
        super::stream::spdy::HeaderInflater::default()
            .decode(block)
            .map(|headers| headers.0.len())
            .map_err(|e| e.to_string())
    }

    /// Server-side apply of `config` by `manager` onto `live`.
    pub fn server_side_apply(
        live: &Value,
        config: &Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, ApiError> {
        super::managed::apply(
            live,
            config,
            manager,
            "v1",
            force,
            jiff::Timestamp::UNIX_EPOCH,
        )
    }
}

/// The `/version` document.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-skiff"),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

async fn version() -> Response {
    handlers::json(StatusCode::OK, &version_info())
}

/// Mints a bearer token for node `name` (admin only): `{"token": …}`. The kubelet join
/// hands it to the node.
async fn mint_node_token(
    State(state): State<AppState>,
    Extension(identity): Extension<authz::Identity>,
    Path(name): Path<String>,
) -> Response {
    if identity != authz::Identity::Admin {
        let why = format!("User \"{}\" cannot create node tokens", identity.user());
        return ApiError::forbidden("", "nodes", Some(&name), &why).into_response();
    }
    match nodetoken::mint(state.store.as_ref(), &name).await {
        Ok(token) => handlers::json(
            StatusCode::CREATED,
            &json!({"kind": "NodeToken", "node": name, "user": format!("system:node:{name}"), "token": token}),
        ),
        Err(e) => e.into_response(),
    }
}

/// `/metrics` (admin only).
async fn metrics_text(
    State(state): State<AppState>,
    Extension(identity): Extension<authz::Identity>,
) -> Response {
    if identity != authz::Identity::Admin {
        let why = format!("User \"{}\" cannot get path \"/metrics\"", identity.user());
        return ApiError::new_forbidden_path(&why).into_response();
    }
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Mints a join token valid for `ttl` (`None`: no expiry) in process.
pub async fn mint_join_token(store: &dyn Store, ttl: Option<Duration>) -> Result<String, ApiError> {
    Ok(jointoken::mint(store, ttl).await?.token)
}

/// As `mint_join_token`, valid for `ttl` from `now` (tests mint tokens that already expired).
pub async fn mint_join_token_at(
    store: &dyn Store,
    ttl: Option<Duration>,
    now: Timestamp,
) -> Result<String, ApiError> {
    Ok(jointoken::mint_at(store, ttl, now).await?.token)
}

/// Mints a node token in process (tests, and a control plane that joins its own node).
pub async fn mint_node_token_in(store: &dyn Store, node: &str) -> Result<String, ApiError> {
    nodetoken::mint(store, node).await
}

async fn ok() -> &'static str {
    "ok"
}

async fn openapi_root() -> Response {
    handlers::json(StatusCode::OK, &openapi::root())
}

async fn openapi_doc(Path(rest): Path<String>) -> Response {
    match openapi::by_path(&rest) {
        Some(doc) => handlers::json(StatusCode::OK, &doc),
        None => ApiError::no_route(&format!("/openapi/v3/{rest}")).into_response(),
    }
}
