/// The console's one stylesheet, compiled into the binary (the CSP allows styles from our origin only: no
/// inline style, no CDN). Long unbroken values wrap anywhere, so a hostile payload cannot break the layout.
enum ConsoleAssets {
    static let css = """
    :root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --bg: #f7f8fa; --card: #fff; --accent: #2456d3;
            --bad: #b42318; --good: #1a7f37; --warn: #9a6700; }
    * { box-sizing: border-box; }
    body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
    a { color: var(--accent); }
    a:focus, button:focus, input:focus, select:focus { outline: 3px solid #8fb0ff; outline-offset: 1px; }
    header { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1.5rem; padding: .75rem 1.25rem;
             background: var(--card); border-bottom: 1px solid var(--line); }
    header .brand { font-weight: 700; margin-right: auto; }
    nav ul { display: flex; flex-wrap: wrap; gap: .25rem 1rem; list-style: none; margin: 0; padding: 0; }
    nav a[aria-current="page"] { font-weight: 700; text-decoration: none; color: var(--fg); }
    main { max-width: 1200px; margin: 0 auto; padding: 1.25rem; }
    h1 { font-size: 1.4rem; margin: .25rem 0 1rem; }
    h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
    section > h2:first-child { margin-top: .25rem; }
    section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .75rem 1rem; margin-bottom: 1rem; }
    table { width: 100%; border-collapse: collapse; }
    th, td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-bottom: 1px solid var(--line); }
    th { color: var(--muted); font-weight: 600; font-size: .85rem; }
    td, dd, p, code { overflow-wrap: break-word; }
    pre { overflow-wrap: anywhere; }
    .scroll { overflow-x: auto; }
    dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0; }
    dt { color: var(--muted); }
    dd { margin: 0; }
    .ok { color: var(--good); } .bad { color: var(--bad); } .warn { color: var(--warn); } .muted { color: var(--muted); }
    pre { white-space: pre-wrap; background: var(--bg); border: 1px solid var(--line); padding: .5rem; border-radius: 4px; }
    form.inline { display: inline; }
    button, input[type=submit] { font: inherit; padding: .3rem .8rem; border: 1px solid var(--accent); border-radius: 4px;
                                 background: var(--accent); color: #fff; cursor: pointer; }
    button.link { background: none; color: var(--accent); border: none; padding: 0; text-decoration: underline; }
    input[type=password], input[type=text], select { font: inherit; padding: .3rem .5rem; border: 1px solid var(--line); border-radius: 4px; }
    form.filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: flex-end; margin-bottom: 1rem; }
    ul.routes { padding-left: 1.2rem; }
    ul.routes li { margin: .25rem 0; }
    .signin { max-width: 28rem; margin: 4rem auto; }
    .signin label { display: block; margin-bottom: .25rem; }
    .signin input[type=password] { width: 100%; margin-bottom: .75rem; }
    .notice { border-left: 4px solid var(--good); padding: .5rem .75rem; background: #eef8f0; }
    .error { border-left: 4px solid var(--bad); padding: .5rem .75rem; background: #fdf1f0; }
    @media (max-width: 640px) {
      main { padding: .75rem; }
      dl { grid-template-columns: 1fr; }
      dd { margin-bottom: .4rem; }
      /* Tables become one card per row, each cell labelled by its column. */
      table.rows, table.rows tbody, table.rows tr, table.rows th, table.rows td { display: block; }
      table.rows thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); }
      table.rows tr { border-bottom: 1px solid var(--line); padding: .4rem 0; }
      table.rows th, table.rows td { border: none; padding: .1rem 0; }
      table.rows td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); font-size: .85rem; }
    }
    """
}
