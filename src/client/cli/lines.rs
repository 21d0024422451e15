//! Where the shell's lines come from, and how a push is printed without
//! mangling the line being typed: rustyline on a terminal, plain stdin otherwise.

use std::io::{self, BufRead, IsTerminal};
use std::path::PathBuf;

/// Prints one push line; called from the shell's reader thread.
pub(super) type PushPrinter = Box<dyn FnMut(String) + Send>;

/// Where shell lines come from: rustyline on a terminal (editing, history, live
/// pushes above the prompt), plain lines otherwise (`printf 'echo hi\n' | frameloop client`).
pub(super) enum Lines {
    Editor(Box<rustyline::DefaultEditor>, Option<PathBuf>),
    Plain(io::Lines<io::StdinLock<'static>>),
}

impl Lines {
    /// Standard input's lines, with the printer for pushes that suits it: above
    /// the prompt on a terminal (rustyline's external printer), plain lines otherwise.
    pub(super) fn open() -> Result<(Lines, PushPrinter), String> {
        use rustyline::ExternalPrinter;
        if !io::stdin().is_terminal() {
            let print: PushPrinter = Box::new(|line| println!("{line}"));
            return Ok((Lines::Plain(io::stdin().lock().lines()), print));
        }
        let mut editor = rustyline::DefaultEditor::new().map_err(|e| e.to_string())?;
        let history =
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".frameloop_history"));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        let mut printer = editor
            .create_external_printer()
            .map_err(|e| e.to_string())?;
        let print: PushPrinter = Box::new(move |line| {
            let _ = printer.print(line);
        });
        Ok((Lines::Editor(Box::new(editor), history), print))
    }

    /// The next line, or `None` at the end of input.
    pub(super) fn next(&mut self, prompt: &str) -> Result<Option<String>, String> {
        use rustyline::error::ReadlineError;
        match self {
            Lines::Editor(editor, _) => loop {
                match editor.readline(prompt) {
                    Ok(line) => {
                        let _ = editor.add_history_entry(line.trim());
                        return Ok(Some(line));
                    }
                    Err(ReadlineError::Interrupted) => continue, // Ctrl-C clears the line
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(e.to_string()),
                }
            },
            Lines::Plain(lines) => lines.next().transpose().map_err(|e| e.to_string()),
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if let Lines::Editor(editor, Some(path)) = self {
            let _ = editor.save_history(path);
        }
    }
}
