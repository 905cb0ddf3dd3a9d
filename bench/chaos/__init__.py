"""The chaos harness (``make chaos``): kills under load, then counts what became of each request.

Modules: ``run`` (the command line and the run), ``client`` (the requests and their retries),
``killer`` (the kill schedule and the kills), ``tally`` (joining the client's outcomes, the
agent's delivery log and the journal), ``report`` (the table and the targets).
"""
