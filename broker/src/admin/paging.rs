//! Paged lists: `_page` (from 1) and `_limit` (default 100, capped by `admin.max_page_limit`),
//! answered as `{"data": [...], "meta": {"page", "limit", "count"}}`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};

pub const DEFAULT_LIMIT: usize = 100;

/// The paging part of a list request's query.
#[derive(Debug, Default, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Page number, from 1.
    #[serde(rename = "_page")]
    #[param(rename = "_page")]
    pub page: Option<usize>,
    /// Rows per page (default 100; larger values are capped at `admin.max_page_limit`).
    #[serde(rename = "_limit")]
    #[param(rename = "_limit")]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Meta {
    pub page: usize,
    pub limit: usize,
    /// Rows in all pages together.
    pub count: usize,
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub meta: Meta,
}

impl Paging {
    /// Cuts the page out of `rows`.
    pub fn page<T>(self, rows: Vec<T>, max_limit: usize) -> ApiResult<Page<T>> {
        let page = self.page.unwrap_or(1);
        if page == 0 {
            return Err(ApiError::bad("query parameter `_page` must be at least 1"));
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 {
            return Err(ApiError::bad("query parameter `_limit` must be at least 1"));
        }
        let limit = limit.min(max_limit.max(1));
        let count = rows.len();
        let data = rows.into_iter().skip((page - 1).saturating_mul(limit)).take(limit).collect();
        Ok(Page { data, meta: Meta { page, limit, count } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cut_and_cap() {
        let p = Paging { page: Some(2), limit: Some(3) }.page((1..=8).collect(), 100).unwrap();
        assert_eq!(p.data, vec![4, 5, 6]);
        assert_eq!((p.meta.page, p.meta.limit, p.meta.count), (2, 3, 8));
        let p = Paging { page: None, limit: Some(50) }.page((1..=8).collect::<Vec<_>>(), 5).unwrap();
        assert_eq!(p.meta.limit, 5);
        assert!(Paging { page: Some(0), limit: None }.page(vec![1], 5).unwrap_err().message.contains("_page"));
    }
}
