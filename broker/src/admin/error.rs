//! The one error type of the management API and the extractors that produce it: every failure
//! renders as `{"code": N, "message": "..."}` with NanoMQ's result codes and the right status.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// NanoMQ's result codes, as the `code` of an error body.
pub mod code {
    pub const UNKNOWN: u16 = 102;
    pub const BAD_CREDENTIALS: u16 = 103;
    pub const MISSING_PARAMETER: u16 = 107;
    pub const BAD_PARAMETER: u16 = 108;
    pub const INVALID_JSON: u16 = 109;
    pub const PLUGIN_LOADED: u16 = 110;
    pub const PLUGIN_UNLOADED: u16 = 111;
    pub const CLIENT_NOT_ONLINE: u16 = 112;
    pub const ALREADY_EXISTS: u16 = 113;
    pub const INVALID_TOPIC: u16 = 115;
    pub const TOKEN_EXPIRED: u16 = 116;
    pub const WRITE_FAILED: u16 = 118;
}

/// An error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// NanoMQ result code: 103 bad credentials, 107 missing parameter, 108 bad parameter, 109
    /// invalid JSON, 112 client not online, 113 already exists, 115 invalid topic, 116 token expired.
    pub code: u16,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u16,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: u16, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::BAD_PARAMETER, message)
    }
    pub fn missing(field: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::MISSING_PARAMETER, format!("missing parameter `{field}`"))
    }
    pub fn topic(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::INVALID_TOPIC, message)
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code::BAD_PARAMETER, format!("{} not found", what.into()))
    }
    pub fn not_online(client_id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, code::CLIENT_NOT_ONLINE, format!("client {client_id:?} is not online"))
    }
    pub fn conflict(code: u16, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn unauthorized(code: u16, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code::UNKNOWN, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        } else {
            tracing::info!(status = self.status.as_u16(), code = self.code, message = %self.message, "request refused");
        }
        let mut res = (self.status, axum::Json(ErrorBody { code: self.code, message: self.message })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"starling\", Bearer"),
            );
        }
        res
    }
}

/// A JSON body whose errors name the field: unknown fields, wrong types and out-of-range values
/// are 400/108 with the field's path, broken JSON is 400/109, a body too large is 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code::BAD_PARAMETER, "request body too large")
            } else {
                ApiError::bad(e.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, code::INVALID_JSON, "request body must be JSON"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(StatusCode::BAD_REQUEST, code::INVALID_JSON, format!("invalid JSON: {inner}"))
        } else if inner.to_string().starts_with("missing field") {
            ApiError::new(StatusCode::BAD_REQUEST, code::MISSING_PARAMETER, at(&path, &inner.to_string()))
        } else {
            ApiError::bad(at(&path, &inner.to_string()))
        }
    })
}

fn at(path: &str, message: &str) -> String {
    if path.is_empty() || path == "." { message.to_string() } else { format!("field `{path}`: {message}") }
}

/// A query string whose errors name the parameter, like `ApiJson`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            if path.is_empty() || path == "." {
                ApiError::bad(format!("query: {message}"))
            } else {
                ApiError::bad(format!("query parameter `{path}`: {message}"))
            }
        })
    }
}
