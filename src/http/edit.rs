//! Collaborative editing over HTTP (PROTOCOL §8).

use axum::Router;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
