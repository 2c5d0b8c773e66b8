"""The app's CSS and the Annotate hotkeys. Gradio 6 takes both in launch(css=..., head=...).

Keys (Annotate tab): 1 left better, 2 right better, 3 both good / tie, 4 both bad, S skip (with the
reason picked), U undo. Keys typed inside a text box type normally; a key does nothing while the
Annotate buttons are not on screen (another tab is open).
"""

# Key -> elem_id of the button it clicks (racq.ui.annotate uses the same ids).
KEYS = {"1": "vote-left", "2": "vote-right", "3": "vote-tie", "4": "vote-bad", "s": "vote-skip", "u": "vote-undo"}

HOTKEYS_JS = """<script>
(() => {
  const keys = %s;
  document.addEventListener("keydown", (e) => {
    const t = e.target;   // digits and letters type normally inside text fields (not radios/checkboxes)
    const typing = t && (t.tagName === "TEXTAREA" || t.isContentEditable ||
      (t.tagName === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(t.type)));
    if (typing) return;
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const id = keys[e.key.toLowerCase()];
    const el = id && document.getElementById(id);
    if (!el || el.offsetParent === null || el.disabled) return;   // hidden tab or disabled: no vote
    e.preventDefault();
    el.click();
  });
})();
</script>""" % str(KEYS).replace("'", '"')

CSS = """
.racq-query { font-size: 1.1em; margin: .3em 0 .6em; }
.racq-label { font-size: .8em; text-transform: uppercase; letter-spacing: .05em; opacity: .7; }
.racq-passages { margin: 0; padding-left: 1.4em; }
.racq-passages li { margin: .35em 0; line-height: 1.4; }
.racq-passages li.racq-outside { opacity: .5; }
.racq-score { font-family: monospace; font-size: .85em; opacity: .7; }
.racq-cards { display: flex; gap: .8em; flex-wrap: wrap; }
.racq-card { flex: 1 1 14em; border: 1px solid var(--border-color-primary); border-radius: 8px;
             padding: .7em .9em; min-width: 14em; }
.racq-card h4 { margin: 0 0 .4em; }
.racq-question { font-size: 1.05em; margin: .2em 0 .6em; min-height: 1.5em; }
.racq-error { color: var(--error-text-color, #b91c1c); }
.racq-pending { opacity: .6; font-style: italic; }
.racq-metrics { font-size: .85em; display: flex; flex-wrap: wrap; gap: .3em .9em; margin-bottom: .4em; }
.racq-options { margin: 0; padding-left: 1.1em; font-size: .9em; }
.racq-options li.ok::marker { content: "✔ "; color: #15803d; }
.racq-options li.bad::marker { content: "✘ "; color: #b91c1c; }
.racq-support { display: block; opacity: .85; font-size: .92em; }
.racq-support mark { background: #fde68a; color: inherit; padding: 0 .1em; }
.racq-nocoverage { border-left: 4px solid #d97706; background: rgba(217,119,6,.08); padding: .5em .8em;
                   margin: .3em 0 .6em; }
.racq-guard { font-size: .85em; opacity: .8; margin-top: .3em; }
.racq-cand { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: .8em 1em;
             min-height: 4em; font-size: 1.1em; }
.racq-progress progress { width: 100%; height: .8em; }
.racq-table { width: 100%; border-collapse: collapse; font-size: .85em; }
.racq-table td, .racq-table th { border-bottom: 1px solid var(--border-color-primary); padding: .25em .4em;
                                 text-align: left; vertical-align: top; }
.racq-undone { text-decoration: line-through; opacity: .6; }
"""
