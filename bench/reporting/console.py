"""Short human summaries of records on the terminal."""

from __future__ import annotations

from bench.reporting.throughput import engine_label


def print_run_summary(record: dict, out_dir) -> None:
    spec = record["config"]["spec"]
    stopped = {"patience": ", stopped by its patience", "budget": ""}.get(
        record.get("stop_reason", ""), "")
    print(f"{record['run_name']}: {record['status']} after {record['updates']} updates "
          f"({record['epochs']:.2f} epochs{stopped}), best at update {record['best_update']}")
    for metric in record["metrics"]:
        line = (f"  {metric['split']:<5} {metric['bound']}"
                f"{'' if metric['k'] is None else '(K=' + str(metric['k']) + ')'}: "
                f"NLL {metric['nll']:.2f} nats")
        if "perplexity" in metric:
            line += f", perplexity {metric['perplexity']:.1f}"
        print(line)
    for entry in record.get("reconstruction", []):
        print(f"  {entry['split']:<5} reconstruction: {entry['squared_error']:.2f} per image, "
              f"MSE {entry['mse']:.4f} per pixel")
    throughput = record["throughput"]
    if throughput["updates_per_s"]:
        print(f"  throughput: {throughput['updates_per_s']:.1f} updates/s, "
              f"{throughput['examples_per_s']:.0f} examples/s on {record['environment']['device']}, "
              f"optimizer {spec['optimizer']}, engine {engine_label(record)}")
    print(f"  record: {out_dir}/record.json")

