//! The team dashboard renders content written in the earlier platform's
//! vocabulary (`headline`, `body`, `message`, `source`, `from`, `to`,
//! `subject`) as fully as in ours.

use serde_json::json;

use crate::chrome::Browser;
use crate::support::*;
use crate::{FEED_IDS, SECS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_page_shows_injects_written_in_the_earlier_vocabulary() {
    let app = spawn_app().await;
    let injects = json!([
        {"id": "post", "time": 0, "type": "tweet",
         "content": {"source": "Kestrel Bay Watch", "headline": "Smoke at berth 7", "body": "Black smoke over the terminal"}},
        {"id": "social", "time": 0, "type": "social",
         "content": {"from": "@harbour_cam", "message": "Crowds gather on the quay"}},
        {"id": "text", "time": 0, "type": "sms",
         "content": {"from": "KB-FIRE OPS", "to": "Duty officer", "message": "Bay 34 at 68C and rising"}},
        {"id": "clip", "time": 0, "type": "video",
         "content": {"headline": "Drone footage over Eastharbour", "body": "The plume turns north-east"}},
        {"id": "mail", "time": 0, "type": "email",
         "content": {"source": "duty.manager@nordicline.example", "to": "crisis.cell@port.example",
                     "subject": "Dangerous goods manifest", "message": "Manifest attached"}},
        {"id": "article", "time": 0, "type": "news",
         "content": {"source": "Kestrel Bay Live", "title": "Port closes berths 5 to 9", "text": "Operations halted"}},
        {"id": "brief", "time": 0, "type": "briefing",
         "content": {"headline": "Situation briefing", "message": "Fire aboard MV Nordic Aurora", "source": "Harbourmaster"}},
    ]);
    let package = json!({
        "name": "Earlier vocabulary",
        "duration": 1,
        "teams": [{"id": "blue", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": injects}],
    });
    let created = app.create("earlier", 1.0, package).await;
    let url = created["teams"][0]["dashboard_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let browser = Browser::on_live_dashboard(&url, SECS).await;
    app.command("earlier", "start").await;
    browser
        .wait(
            "every inject shown",
            &format!("{FEED_IDS}.length === 7"),
            SECS,
        )
        .await;

    let shown = browser
        .eval(
            r#"
            const q = (id, css) => document.querySelector(`article.inject[data-inject-id="${id}"] ${css}`);
            const t = (id, css) => q(id, css) ? q(id, css).textContent.trim() : null;
            return {
              post_name: t('post', '.display-name'), post_title: t('post', '.social-card .title'),
              post_text: t('post', '.social-card .text'), post_label: t('post', '.type-label'),
              social_name: t('social', '.display-name'), social_text: t('social', '.social-card .text'),
              sms_sender: t('text', '.sms .sender'), sms_to: t('text', '.sms .to'), sms_text: t('text', '.sms .bubble'),
              video_title: t('clip', '.video .title'), video_caption: t('clip', '.video .caption'),
              mail_from: t('mail', '.email .from'), mail_to: t('mail', '.email .to'),
              mail_subject: t('mail', '.email .subject'), mail_body: t('mail', '.email .body'),
              news_outlet: t('article', '.news .outlet'), news_headline: t('article', '.news .headline'),
              news_body: t('article', '.news .body'),
              brief_title: t('brief', '.report .title'), brief_body: t('brief', '.report .body'),
              brief_source: t('brief', '.report .source'),
            };"#,
        )
        .await;
    let check = |key: &str, want: &str| {
        let got = shown[key].as_str().unwrap_or_default();
        assert!(
            got.contains(want),
            "{key}: {got:?} lacks {want:?} in {shown}"
        );
    };
    check("post_name", "Kestrel Bay Watch");
    check("post_title", "Smoke at berth 7");
    check("post_text", "Black smoke over the terminal");
    check("post_label", "Social media");
    check("social_name", "@harbour_cam");
    check("social_text", "Crowds gather on the quay");
    check("sms_sender", "KB-FIRE OPS");
    check("sms_to", "Duty officer");
    check("sms_text", "Bay 34 at 68C and rising");
    check("video_title", "Drone footage over Eastharbour");
    check("video_caption", "The plume turns north-east");
    check("mail_from", "duty.manager@nordicline.example");
    check("mail_to", "crisis.cell@port.example");
    check("mail_subject", "Dangerous goods manifest");
    check("mail_body", "Manifest attached");
    check("news_outlet", "Kestrel Bay Live");
    check("news_headline", "Port closes berths 5 to 9");
    check("news_body", "Operations halted");
    check("brief_title", "Situation briefing");
    check("brief_body", "Fire aboard MV Nordic Aurora");
    check("brief_source", "Harbourmaster");
}
