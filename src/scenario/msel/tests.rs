use std::path::Path;

use rust_xlsxwriter::Workbook;
use serde_json::json;

use super::csv::read as read_csv;
use super::read::{MAX_COLUMNS, MAX_ROWS, check_archive, seconds};
use super::*;
use crate::config::Limits;
use crate::scenario::fixtures::{assert_same, expect_valid};
use crate::scenario::{load, to_inline};

fn csv(text: &str) -> Result<read::Imported, MselError> {
    let options = ImportOptions {
        file_name: "drill.csv".into(),
        ..ImportOptions::default()
    };
    import(text.as_bytes(), &options, &Limits::default())
}

fn problems(result: Result<read::Imported, MselError>) -> Vec<String> {
    match result {
        Ok(imported) => panic!("expected problems, got {:#}", imported.package),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn times_are_seconds_or_minutes_and_seconds() {
    let text = |s: &str| seconds(&Cell::Text(s.into()));
    for (input, want) in [
        ("0", 0),
        ("90", 90),
        ("T+05:00", 300),
        ("T+5:06", 306),
        ("t+90:59", 5459),
        ("12:30", 750),
        ("1:02:03", 3723),
        (" T+00:07 ", 7),
    ] {
        assert_eq!(text(input), Ok(want), "{input}");
    }
    for input in ["T+5:6x", "-3", "1.5", "T+5:60", "T+5:6", "", "x", "T+:30"] {
        assert!(text(input).is_err(), "{input}");
    }
    assert_eq!(seconds(&Cell::Number(42.0)), Ok(42));
    assert!(seconds(&Cell::Number(4.5)).is_err());
    assert_eq!(seconds(&Cell::Duration(300.0)), Ok(300));
}

#[test]
fn csv_fields_may_be_quoted_across_lines_after_a_bom() {
    let text = "\u{feff}Time,Team,Content\r\n1,\"blue, red\",\"two\nlines, \"\"quoted\"\"\"\r\n\r\n2,green,\n";
    let sheets = read_csv(text.as_bytes(), "x").unwrap();
    let rows = &sheets[0].rows;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].1[0], Cell::Text("Time".into()));
    assert_eq!(rows[1].0, 2);
    assert_eq!(rows[1].1[1], Cell::Text("blue, red".into()));
    assert_eq!(rows[1].1[2], Cell::Text("two\nlines, \"quoted\"".into()));
    // Row numbers count records, as a spreadsheet opening the file numbers
    // its rows: the two-line cell is one row, the blank line another.
    assert_eq!(rows[2].0, 4);
    assert_eq!(rows[2].1[2], Cell::Empty);

    let semicolons = read_csv("Time;Team\n1;\"a;b\"\n".as_bytes(), "x").unwrap();
    assert_eq!(semicolons[0].rows[1].1[1], Cell::Text("a;b".into()));
    assert!(read_csv(b"Time,\"open\n", "x").is_err());
    // A lone CR ends a row.
    let old_mac = read_csv(b"Time,Team\r1,blue\r", "x").unwrap();
    assert_eq!(old_mac[0].rows.len(), 2);
    assert_eq!(old_mac[0].rows[1].0, 2);
    // A file of separators or of empty lines is refused, not held in memory.
    let wide = format!("Time{}\n", ",".repeat(MAX_COLUMNS as usize));
    assert_eq!(
        read_csv(wide.as_bytes(), "x").err().unwrap(),
        format!(
            "Sheet \"x\", row 1: beyond the {MAX_ROWS} rows and {MAX_COLUMNS} columns an MSEL may use"
        )
    );
    let full = "1,blue\n".repeat(MAX_ROWS as usize);
    assert_eq!(
        read_csv(full.as_bytes(), "x").unwrap()[0].rows.len(),
        MAX_ROWS as usize
    );
    let long = "\n".repeat(MAX_ROWS as usize + 1);
    assert!(
        read_csv(long.as_bytes(), "x")
            .err()
            .unwrap()
            .contains(&format!("row {}", MAX_ROWS + 1))
    );
    assert!(read_csv(&[0xff, 0xfe, 0x00], "x").is_err());
}

#[test]
fn a_csv_msel_becomes_a_valid_scenario() {
    let imported = csv(
        "Exercise time,Recipient(s),Channel,Headline,Message,Priority,Attachments,Expected action\n\
         0,all,Briefing,Start,The exercise begins,high,/media/map.png; /media/plan.pdf,\n\
         T+02:30,\"blue; red\",sms,,Call the harbour master,,,Call back\n\
         300,green,news,Smoke,,,,\n",
    )
    .unwrap();
    let package = &imported.package;
    assert_eq!(package["scenario_id"], "drill");
    assert_eq!(package["duration_minutes"], 5);
    let teams: Vec<&str> = package["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(teams, ["blue", "red", "green"]);
    let blue = &package["timelines"][0]["injects"];
    assert_eq!(
        blue[0],
        json!({"id": "inject-002", "time": 0, "type": "briefing",
            "content": {"title": "Start", "body": "The exercise begins"},
            "priority": "high", "media": ["/media/map.png", "/media/plan.pdf"]})
    );
    assert_eq!(
        blue[1],
        json!({"id": "inject-003", "time": 150, "type": "sms",
            "content": {"body": "Call the harbour master"}, "action": "Call back"})
    );
    let green = &package["timelines"][2]["injects"];
    assert_eq!(green.as_array().unwrap().len(), 2);
    assert_eq!(imported.scenario.teams.len(), 3);
}

#[test]
fn every_problem_names_its_sheet_row_and_column() {
    let found = problems(csv("Time,Team,Type,Title\n\
         0,blue,news,Fine\n\
         T+5:6x,blue,news,Bad time\n\
         60,,news,No team\n\
         70,blue,,No type\n"));
    assert_eq!(
        found,
        [
            r#"Sheet "drill", row 3, column A (Time): "T+5:6x" is not seconds or T+mm:ss"#,
            r#"Sheet "drill", row 4, column B (Team): no team: name one or more, separated by , or ;, or "all""#,
            r#"Sheet "drill", row 5, column C (Type): no type: news, social, email, sms, video, intel, briefing, ..."#,
        ]
    );
    let found = problems(csv("When,Team,Type\n0,blue,news\n"));
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with(r#"Sheet "drill", row 1: no time column"#),
        "{found:?}"
    );

    // Validation of the built scenario points at the rows.
    let found = problems(csv(
        "ID,Time,Team,Type\nx-1,0,blue,news\nx-1,5,blue,News\nx-2,9,blue,Not a word\n",
    ));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with(r#"Sheet "drill", row 3: inject "x-1""#),
        "{found:?}"
    );
    assert!(found[0].contains("duplicate"), "{found:?}");
    assert!(
        found[1].starts_with(r#"Sheet "drill", row 4: inject "x-2""#),
        "{found:?}"
    );
}

#[test]
fn explicit_columns_and_sheets_are_used() {
    let mut workbook = Workbook::new();
    let notes = workbook.add_worksheet();
    notes.set_name("Notes").unwrap();
    notes.write_string(0, 0, "Read me").unwrap();
    let sheet = workbook.add_worksheet();
    sheet.set_name("Plan").unwrap();
    sheet.write_string(2, 1, "Offset").unwrap();
    sheet.write_string(2, 2, "Sent to").unwrap();
    sheet.write_string(2, 3, "Type").unwrap();
    sheet.write_number(3, 1, 30).unwrap();
    sheet.write_string(3, 2, "blue").unwrap();
    sheet.write_string(3, 3, "email").unwrap();
    sheet.write_string(4, 1, "T+1:xx").unwrap();
    sheet.write_string(4, 2, "blue").unwrap();
    sheet.write_string(4, 3, "email").unwrap();
    let bytes = workbook.save_to_buffer().unwrap();

    let mut options = ImportOptions {
        file_name: "plan.xlsx".into(),
        mapping: Mapping::parse(&["team=Sent to"]).unwrap(),
        ..ImportOptions::default()
    };
    let found = problems(import(&bytes, &options, &Limits::default()));
    assert_eq!(
        found,
        [r#"Sheet "Plan", row 5, column B (Offset): "T+1:xx" is not seconds or T+mm:ss"#]
    );
    options.sheet = Some("Notes".into());
    let found = problems(import(&bytes, &options, &Limits::default()));
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found[0].starts_with(r#"Sheet "Notes", row 1: no column "Sent to" for team"#));
    assert!(found[1].starts_with(r#"Sheet "Notes", row 1: no time column"#));
    options.sheet = Some("Missing".into());
    let found = problems(import(&bytes, &options, &Limits::default()));
    assert_eq!(
        found,
        [r#"no sheet "Missing"; the sheets are "Notes", "Plan""#]
    );
}

#[test]
fn an_exported_scenario_imports_as_itself() {
    for name in ["four-teams", "shared-timeline"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name)
            .join("scenario.json");
        let scenario = expect_valid(load(&path, &Limits::default(), None));
        let bytes = export(&scenario).unwrap();
        let options = ImportOptions {
            file_name: format!("{name}.xlsx"),
            ..ImportOptions::default()
        };
        let imported = import(&bytes, &options, &Limits::default()).unwrap();
        assert_eq!(imported.package, to_inline(&scenario), "{name}");
        assert_same(&imported.scenario, &scenario);
    }
}

#[test]
fn a_hostile_workbook_is_refused_before_it_is_unpacked_or_laid_out() {
    // Two cells at the far corners of a sheet: laid out as one rectangle
    // they would ask for 17 billion cells.
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.write_string(0, 0, "Time").unwrap();
    sheet.write_string(1_048_575, 16_383, "far").unwrap();
    let bytes = workbook.save_to_buffer().unwrap();
    let options = ImportOptions {
        file_name: "far.xlsx".into(),
        ..ImportOptions::default()
    };
    assert_eq!(
        problems(import(&bytes, &options, &Limits::default())),
        [format!(
            "sheet \"Sheet1\" has a cell at XFD1048576, beyond the {MAX_ROWS} rows and {MAX_COLUMNS} columns an MSEL may use"
        )]
    );

    // What the archive declares is summed before calamine unpacks it.
    let mut workbook = Workbook::new();
    workbook
        .add_worksheet()
        .write_string(0, 0, "x".repeat(30_000))
        .unwrap();
    let bytes = workbook.save_to_buffer().unwrap();
    assert_eq!(check_archive(&bytes, 10_000_000), Ok(()));
    let refused = check_archive(&bytes, 20_000).unwrap_err();
    assert!(
        refused.starts_with("the workbook unpacks to ")
            && refused.ends_with(" bytes, more than the 20000 an MSEL may take"),
        "{refused}"
    );
    assert!(
        check_archive(b"not a zip", 20_000)
            .unwrap_err()
            .starts_with("not a readable .xlsx workbook")
    );
}
