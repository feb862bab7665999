"""Web search before an answer (docs/protocol.md section 18, README "Web search").

``engines`` asks a search engine for results, ``fetcher`` reads their pages without ever reaching an
address the deployment did not allow, ``extract`` keeps a page's main text, ``passages`` picks the
parts most relevant to the question, and ``search`` runs the whole step, reporting its progress.
"""
