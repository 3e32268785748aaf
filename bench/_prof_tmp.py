import sys, tempfile
from pathlib import Path
from bench.calllog_overhead import KEY, gateway_env, switchboard
from bench.drivers import Request, loadgen
from bench.profile import record, summarize, render
from bench.providers import providers, config, BODY
from tests.servers import free_port
work = Path(tempfile.mkdtemp())
name = sys.argv[1]
with switchboard("simulate", port=free_port(), core=1) as sim:
    provider, model = providers(str(sim))[name]
    with switchboard("serve", port=free_port(), env=gateway_env(config(provider, model), work), core=0) as url:
        req = Request(url=f"{url}/v1/chat/completions", body=BODY, headers={"Authorization": f"Bearer {KEY}"})
        loadgen(req, mode="closed", core=1, duration_s=2, connections=32)
        out = work / "raw.txt"
        with record(".venv/bin/py-spy", pid=url.pid, seconds=6, output=out, core=1):
            rep = loadgen(req, mode="closed", core=1, duration_s=6, connections=32)
        prof = summarize(out, name=name, rps=rep.requests/rep.duration_s, summary_path=work/"s.txt", top=30)
        print(render(prof))
