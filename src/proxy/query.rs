//! Query edits on a request URI: parameters set or removed under their proto or JSON name, the
//! rest of the query kept byte for byte.

use crate::policy::fields;

/// Sets query parameters: the other parameters stay byte for byte, every occurrence of a set
/// one (under its proto or JSON name, empty or not) is replaced by one `name=value` at the end.
pub fn set_query_params(uri: &http::Uri, settings: &[(&str, &str)]) -> http::Uri {
    let edits: Vec<(&str, Option<&str>)> = settings.iter().map(|(k, v)| (*k, Some(*v))).collect();
    edit_query_params(uri, &edits)
}

/// Sets (`Some`) or removes (`None`) query parameters: the other parameters stay byte for
/// byte, every occurrence of an edited one (under its proto or JSON name) is dropped and a set
/// one appended once as `name=value`.
pub fn edit_query_params(uri: &http::Uri, settings: &[(&str, Option<&str>)]) -> http::Uri {
    let mut query = String::new();
    for piece in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let named = form_urlencoded::parse(piece.as_bytes())
            .next()
            .is_some_and(|(k, _)| settings.iter().any(|(name, _)| fields::names(&k, name)));
        if !named {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(piece);
        }
    }
    for (k, v) in settings.iter().filter_map(|(k, v)| v.map(|v| (k, v))) {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish(),
        );
    }
    with_query(uri, &query)
}

fn with_query(uri: &http::Uri, query: &str) -> http::Uri {
    let mut parts = uri.clone().into_parts();
    let pq = format!("{}?{query}", uri.path());
    match http::uri::PathAndQuery::try_from(pq) {
        Ok(pq) => {
            parts.path_and_query = Some(pq);
            http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
        }
        Err(_) => uri.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_edits_keep_the_rest_of_the_query() {
        let uri = http::Uri::from_static("/m?channel_identity=%2B1555&app_id=a");
        assert_eq!(
            set_query_params(&uri, &[("messages_source", "DISPATCH_SOURCE")]).to_string(),
            "/m?channel_identity=%2B1555&app_id=a&messages_source=DISPATCH_SOURCE"
        );
        let uri = http::Uri::from_static("/m/1?messages_source=CONVERSATION_SOURCE");
        assert_eq!(
            set_query_params(&uri, &[("messages_source", "DISPATCH_SOURCE")]).to_string(),
            "/m/1?messages_source=DISPATCH_SOURCE"
        );
        for empty in [
            "/m?messages_source=&app_id=a",
            "/m?messagesSource=&app_id=a",
        ] {
            let uri = http::Uri::from_static(empty);
            assert_eq!(
                set_query_params(&uri, &[("messages_source", "DISPATCH_SOURCE")]).to_string(),
                "/m?app_id=a&messages_source=DISPATCH_SOURCE",
                "{empty}: one messages_source, not two"
            );
        }
    }
}
