//! Errors as AWS's REST API gives them: the status is the code, the body
//! `{"code":N,"message":"..."}`.

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An HTTP error with AWS's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// A 401 that asks for Basic credentials (`WWW-Authenticate`); the
    /// page's own requests are not asked, so it shows its login form
    /// instead of the browser's prompt.
    pub challenge: bool,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            challenge: false,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn unauthorized(challenge: bool) -> ApiError {
        ApiError {
            challenge,
            ..ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized")
        }
    }

    pub(crate) fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden")
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn too_large() -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large")
    }

    pub(crate) fn internal(why: &str) -> ApiError {
        tracing::error!(why, "answering an HTTP request 500");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal service failure",
        )
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

/// For a streamed body that fails mid-way (hyper then cuts the
/// connection).
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.status.as_u16(), "message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"shade\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// A JSON document with `status`, as the body of an answer.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

pub(crate) async fn no_such_path(uri: Uri) -> ApiError {
    ApiError::not_found(format!("No such path: {}", uri.path()))
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}
