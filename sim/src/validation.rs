//! ACM issues a certificate validated by DNS only once the CNAME records it
//! asked for resolve (ACM user guide, "DNS validation": the certificate stays
//! `PENDING_VALIDATION` until ACM finds each record). moto issues every
//! certificate after a fixed wait, records or not. The layer shows a
//! certificate whose records are not all in a Route 53 hosted zone of the
//! account as `PENDING_VALIDATION`, each missing name's validation as pending
//! too; once they are there, moto's answer goes through.

use serde_json::Value;

use crate::http::Request;
use crate::rules::all_tags;

/// The CNAME records of every hosted zone of the account of `key`, as (name, value).
fn cnames(upstream: &str, key: &str) -> Vec<(String, String)> {
    let zones = get(upstream, key, "/2013-04-01/hostedzone").unwrap_or_default();
    let mut found = Vec::new();
    for zone in all_tags(&zones, "Id") {
        let id = zone.trim_start_matches("/hostedzone/");
        let sets = get(upstream, key, &format!("/2013-04-01/hostedzone/{id}/rrset")).unwrap_or_default();
        for set in sets.split("<ResourceRecordSet>").skip(1) {
            if all_tags(set, "Type").first().map(String::as_str) != Some("CNAME") {
                continue;
            }
            let name = all_tags(set, "Name").into_iter().next().unwrap_or_default();
            for value in all_tags(set, "Value") {
                let value = value.trim().trim_start_matches("<![CDATA[").trim_end_matches("]]>").to_string();
                found.push((name.clone(), value));
            }
        }
    }
    found
}

/// A GET of `path` from moto's Route 53 as the account of `key`; the answer's body.
fn get(upstream: &str, key: &str, path: &str) -> Option<String> {
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=0"
    );
    let headers = vec![("Host".to_string(), upstream.to_string()), ("Authorization".to_string(), authorization)];
    let req = Request { head: format!("GET {path} HTTP/1.1"), headers, body: Vec::new() };
    let answer = req.forward(upstream).ok()?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    Some(text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Whether DNS names are the same (`a.example.com` and `a.example.com.`).
fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// moto's DescribeCertificate answer, as AWS would give it: still pending
/// while a validation record is missing.
pub fn shown(req: &Request, answer: Vec<u8>, upstream: &str) -> Vec<u8> {
    if req.service() != "acm" || req.action() != "DescribeCertificate" || crate::http::status_of(&answer) != 200 {
        return answer;
    }
    let Ok(mut doc) = serde_json::from_slice::<Value>(crate::http::body_of(&answer)) else { return answer };
    let cert = &mut doc["Certificate"];
    if cert["Status"] != "ISSUED" || cert["Type"] != "AMAZON_ISSUED" {
        return answer;
    }
    let records = cnames(upstream, &req.access_key());
    let mut missing = false;
    for option in cert["DomainValidationOptions"].as_array_mut().into_iter().flatten() {
        let (name, value) = (option["ResourceRecord"]["Name"].clone(), option["ResourceRecord"]["Value"].clone());
        let (Some(name), Some(value)) = (name.as_str(), value.as_str()) else { continue };
        if !records.iter().any(|(n, v)| same_name(n, name) && same_name(v, value)) {
            option["ValidationStatus"] = "PENDING_VALIDATION".into();
            missing = true;
        }
    }
    if !missing {
        return answer;
    }
    cert["Status"] = "PENDING_VALIDATION".into();
    if let Some(fields) = cert.as_object_mut() {
        for issued in ["IssuedAt", "NotBefore", "NotAfter", "Serial"] {
            fields.remove(issued);
        }
    }
    crate::http::with_answer_body(&answer, doc.to_string().as_bytes())
}
