//! The control room creates an exercise from a spreadsheet MSEL uploaded in
//! its create form, and shows a bad row's sheet, row and column there.

use std::path::Path;

use rust_xlsxwriter::Workbook;

use crate::SECS;
use crate::chrome::Browser;
use crate::support::*;

/// An MSEL workbook: a header row, then `rows` (time, team, type, title).
fn workbook(path: &Path, rows: &[(&str, &str, &str, &str)]) {
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name("MSEL").unwrap();
    for (column, header) in ["Time", "Team", "Type", "Title", "Body"]
        .into_iter()
        .enumerate()
    {
        sheet.write_string(0, column as u16, header).unwrap();
    }
    for (index, (time, team, kind, title)) in rows.iter().enumerate() {
        let row = index as u32 + 1;
        sheet.write_string(row, 0, *time).unwrap();
        sheet.write_string(row, 1, *team).unwrap();
        sheet.write_string(row, 2, *kind).unwrap();
        sheet.write_string(row, 3, *title).unwrap();
        sheet
            .write_string(row, 4, format!("{title}: details"))
            .unwrap();
    }
    workbook.save(path).unwrap();
}

async fn upload(control: &Browser, file: &Path, exercise_id: &str) {
    control
        .wait(
            "the create form",
            "document.querySelector('#create-form input[name=package]')",
            SECS,
        )
        .await;
    control
        .client
        .find(fantoccini::Locator::Css("#create-form input[name=package]"))
        .await
        .unwrap()
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    control
        .type_into("#create-form input[name=exercise_id]", exercise_id)
        .await;
    control.click("#create-form [type=submit]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_msel_becomes_an_exercise_and_a_bad_row_is_named() {
    let app = spawn_app().await;
    let control = Browser::start().await;
    control
        .open(&app.url(&format!("/#token={ADMIN_TOKEN}")))
        .await;

    // A bad row: the form names its sheet, row and column, nothing is created.
    let bad = app.media.join("bad-drill.xlsx");
    workbook(
        &bad,
        &[
            ("T+00:00", "blue", "news", "Fog"),
            ("T+5:6x", "red", "sms", "Tug"),
        ],
    );
    upload(&control, &bad, "bad-msel").await;
    control
        .wait(
            "the bad row named next to the form",
            r#"(document.querySelector('#scenario-errors .msel-error') || {textContent: ''})
                .textContent.includes('Sheet "MSEL", row 3, column A (Time): "T+5:6x" is not seconds or T+mm:ss')"#,
            SECS,
        )
        .await;
    let (_, exercises) = app.get("/api/v1/exercises").await;
    assert_eq!(exercises.as_array().unwrap().len(), 0, "{exercises}");

    // A good one: the exercise is created and its control room opens.
    let good = app.media.join("drill.xlsx");
    workbook(
        &good,
        &[
            ("T+00:00", "blue", "news", "Fog"),
            ("T+01:30", "blue, red", "sms", "Tug"),
            ("120", "all", "briefing", "Status"),
        ],
    );
    control
        .eval("document.querySelector('#create-form input[name=exercise_id]').value = ''")
        .await;
    upload(&control, &good, "msel-room").await;
    control
        .wait(
            "the exercise's control room",
            "location.pathname === '/exercises/msel-room'",
            SECS,
        )
        .await;
    control
        .wait(
            "its deliveries",
            "document.querySelectorAll('#deliveries tr[data-inject]').length === 5",
            SECS,
        )
        .await;
    let (_, exercise) = app.get("/api/v1/exercises/msel-room").await;
    assert_eq!(
        exercise["name"], "drill",
        "named after the file: {exercise}"
    );
    assert_eq!(exercise["teams"].as_array().unwrap().len(), 2, "{exercise}");
    control.quit().await;
}
