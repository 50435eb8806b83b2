//! Topic names and filters: validation against the MQTT rules and the broker's limits,
//! shared-subscription parsing (`$share/{group}/{filter}`) and single filter matching.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic must not be empty")]
    Empty,
    #[error("topic name must not contain wildcards")]
    WildcardInName,
    #[error("'#' must be the last level and stand alone")]
    BadMultiLevelWildcard,
    #[error("'+' must stand alone in its level")]
    BadSingleLevelWildcard,
    #[error("topic must not contain U+0000")]
    NullChar,
    #[error("topic has {0} levels, more than the limit of {1}")]
    TooManyLevels(usize, usize),
    #[error("shared subscription must be $share/{{group}}/{{filter}} with a non-empty group without wildcards")]
    BadShare,
}

/// Checks a topic name used in PUBLISH: no wildcards, no NUL, at most `max_levels` levels.
pub fn validate_name(topic: &str, max_levels: usize) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    if topic.contains('\0') {
        return Err(TopicError::NullChar);
    }
    let levels = topic.split('/').count();
    if levels > max_levels {
        return Err(TopicError::TooManyLevels(levels, max_levels));
    }
    Ok(())
}

/// Checks a plain topic filter (not `$share/...`).
pub fn validate_filter(filter: &str, max_levels: usize) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.contains('\0') {
        return Err(TopicError::NullChar);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    if levels.len() > max_levels {
        return Err(TopicError::TooManyLevels(levels.len(), max_levels));
    }
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err(TopicError::BadMultiLevelWildcard);
        }
        if level.contains('+') && *level != "+" {
            return Err(TopicError::BadSingleLevelWildcard);
        }
    }
    Ok(())
}

/// A subscription filter as given by the client, split into its share group (if any) and filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilterSpec {
    pub share_group: Option<String>,
    pub filter: String,
}

impl FilterSpec {
    /// Parses and validates `filter` or `$share/{group}/{filter}`.
    pub fn parse(raw: &str, max_levels: usize) -> Result<FilterSpec, TopicError> {
        if let Some(rest) = raw.strip_prefix("$share/") {
            let (group, filter) = rest.split_once('/').ok_or(TopicError::BadShare)?;
            if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
                return Err(TopicError::BadShare);
            }
            validate_filter(filter, max_levels)?;
            return Ok(FilterSpec { share_group: Some(group.to_string()), filter: filter.to_string() });
        }
        if raw == "$share" || raw.starts_with("$share/") {
            return Err(TopicError::BadShare);
        }
        validate_filter(raw, max_levels)?;
        Ok(FilterSpec { share_group: None, filter: raw.to_string() })
    }
}

impl fmt::Display for FilterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.share_group {
            Some(g) => write!(f, "$share/{g}/{}", self.filter),
            None => f.write_str(&self.filter),
        }
    }
}

/// Whether a valid filter matches a valid topic name; `$`-topics are not matched by a leading wildcard.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        assert!(validate_filter("a/+/c/#", 10).is_ok());
        assert!(validate_filter("#", 10).is_ok());
        assert_eq!(validate_filter("a/#/c", 10), Err(TopicError::BadMultiLevelWildcard));
        assert_eq!(validate_filter("a/b#", 10), Err(TopicError::BadMultiLevelWildcard));
        assert_eq!(validate_filter("a/b+", 10), Err(TopicError::BadSingleLevelWildcard));
        assert_eq!(validate_filter("a/b/c", 2), Err(TopicError::TooManyLevels(3, 2)));
        assert_eq!(validate_name("a/+", 10), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("", 10), Err(TopicError::Empty));
    }

    #[test]
    fn share_syntax() {
        let s = FilterSpec::parse("$share/g1/a/+", 10).unwrap();
        assert_eq!(s.share_group.as_deref(), Some("g1"));
        assert_eq!(s.filter, "a/+");
        assert_eq!(s.to_string(), "$share/g1/a/+");
        assert!(FilterSpec::parse("$share/g1", 10).is_err());
        assert!(FilterSpec::parse("$share//a", 10).is_err());
        assert!(FilterSpec::parse("$share/g+/a", 10).is_err());
    }

    #[test]
    fn matching_rules() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
    }
}
