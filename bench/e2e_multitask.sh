#!/usr/bin/env bash
# Multi-task models (shared_bottom, mmoe, ple) on MovieLens 100K split u1 with
# the side features of u.user and u.item, defaults only.
#   bench/e2e_multitask.sh tasks     <ml-100k dir> [build dir]  multi-task vs single-task, centralized
#   bench/e2e_multitask.sh federated <ml-100k dir> [build dir]  10 sites by user, default secure aggregation
#   bench/e2e_multitask.sh cold      <ml-100k dir> [build dir]  20% of users kept at 3 training ratings
#   bench/e2e_multitask.sh scenarios <ml-100k dir> [build dir]  sites = scenarios by item genre: global, local and adapted towers
# EXTRA="--set k=v ..." is added to every run. MODELS="ple ..." picks models.
# SEEDS="1 2 3" (cold only): means over seeds, which also draw the cold users.
# Each prints a markdown table. Runs go two at a time (the machine's cores).
set -euo pipefail
mode=${1:?usage: $0 tasks|federated|cold|scenarios <ml-100k dir> [build dir]}
ml=${2:?usage: $0 $mode <ml-100k dir> [build dir]}
build=$(realpath "${3:-build}")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
data="--set data.train=$ml/u1.base --set data.test=$ml/u1.test"
features="--set data.user_features=$ml/u.user --set data.item_features=$ml/u.item"
read -r -a models <<<"${MODELS:-shared_bottom mmoe ple}"

# run NAME COMMAND ARGS...: one fedrec run, its last stdout line in $out/NAME.json.
jobs_file="$out/jobs"
: >"$jobs_file"
add() {
  local name=$1
  shift
  echo "$build/fedrec $* ${EXTRA:-} --force --set output.dir=$out/$name >$out/$name.out 2>$out/$name.err" >>"$jobs_file"
}
run_all() { xargs -P 2 -I{} -d '\n' bash -c '{}' <"$jobs_file"; }

case $mode in
  tasks)
    for m in "${models[@]}"; do
      add "$m-multi" train $data $features --set model.name=$m
      add "$m-rating" train $data $features --set model.name=$m \
        --set model.$m.like_weight=0 --set model.$m.click_weight=0
      add "$m-like" train $data $features --set model.name=$m \
        --set model.$m.rating_weight=0 --set model.$m.click_weight=0
    done
    add mf train $data --set model.name=mf
    run_all
    python3 - "$out" "${models[@]}" <<'PY'
import json, sys
out, models = sys.argv[1], sys.argv[2:]
last = lambda n: json.loads(open(f"{out}/{n}.out").read().strip().splitlines()[-1])
mf = last("mf")
print(f"biased MF (k = 32, same run): rating RMSE {mf['test_rmse']:.4f}\n")
print("| model | multi-task RMSE | rating-only RMSE | multi-task like AUC | like-only AUC | no worse on both, better on one | train s (multi) |")
print("|---|---|---|---|---|---|---|")
for m in models:
    t, r, l = last(f"{m}-multi"), last(f"{m}-rating"), last(f"{m}-like")
    rm, rr = t["tasks"]["rating"]["rmse"], r["tasks"]["rating"]["rmse"]
    am, al = t["tasks"]["like"]["auc"], l["tasks"]["like"]["auc"]
    ok = rm <= rr and am >= al and (rm < rr or am > al)
    print(f"| {m} | {rm:.4f} | {rr:.4f} | {am:.4f} | {al:.4f} | {'yes' if ok else 'no'} | {t['seconds']:.1f} |")
PY
    ;;
  federated)
    for m in "${models[@]}"; do
      add "$m-train" train $data $features --set model.name=$m
      add "$m-sim" sim $data $features --set model.name=$m --set sim.compare_centralized=false
    done
    run_all
    python3 - "$out" "${models[@]}" <<'PY'
import json, sys
out, models = sys.argv[1], sys.argv[2:]
last = lambda n: json.loads(open(f"{out}/{n}.out").read().strip().splitlines()[-1])
print("| model | central RMSE | federated RMSE | fed/central RMSE | central like AUC | federated like AUC | fed/central AUC | round s (mean) | examples/s (central, one thread) |")
print("|---|---|---|---|---|---|---|---|---|")
for m in models:
    c, f = last(f"{m}-train"), last(f"{m}-sim")
    rounds = [json.loads(l) for l in open(f"{out}/{m}-sim/metrics.jsonl")]
    mean_round = sum(r["seconds"] for r in rounds) / len(rounds)
    cr, fr = c["tasks"]["rating"]["rmse"], f["tasks"]["rating"]["rmse"]
    ca, fa = c["tasks"]["like"]["auc"], f["tasks"]["like"]["auc"]
    epochs = c.get("epochs", 60)
    rate = 80000 * epochs / c["seconds"]
    print(f"| {m} | {cr:.4f} | {fr:.4f} | {fr / cr:.4f} | {ca:.4f} | {fa:.4f} | {fa / ca:.4f} | {mean_round:.2f} | {rate:,.0f} |")
PY
    ;;
  cold)
    # SEEDS="1 2 3": one set of runs per seed (the seed also draws the cold
    # users); figures are means over the seeds, "vs MF" per seed too.
    cold="--set data.cold_start.share=0.2 --set data.cold_start.ratings=3"
    read -r -a seeds <<<"${SEEDS:-1}"
    for s in "${seeds[@]}"; do
      sd="--set seed=$s"
      add "mf-s$s" train $data $cold $sd --set model.name=mf
      add "popularity-s$s" train $data $cold $sd --set model.name=popularity
      for m in "${models[@]}"; do add "$m-s$s" train $data $features $cold $sd --set model.name=$m; done
      for m in "${models[@]}"; do add "$m-nofeat-s$s" train $data $cold $sd --set model.name=$m; done
    done
    run_all
    python3 - "$out" "${#seeds[@]}" "${seeds[@]}" "${models[@]}" <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
seeds, models = sys.argv[3:3 + n], sys.argv[3 + n:]
last = lambda name, s: json.loads(open(f"{out}/{name}-s{s}.out").read().strip().splitlines()[-1])
mean = lambda xs: sum(xs) / len(xs)
mf = {s: last("mf", s) for s in seeds}
pop = {s: last("popularity", s) for s in seeds}
for s in seeds:
    print(f"seed {s}: {mf[s]['cold']['count']} cold held-out ratings, {mf[s]['cold']['ranked_users']} ranked users")
print(f"\nmeans over seeds {' '.join(seeds)}\n")
print("| model | cold RMSE | vs MF | vs MF per seed | cold NDCG@10 | vs popularity | warm RMSE | warm NDCG@10 |")
print("|---|---|---|---|---|---|---|---|")
def row(label, runs):
    vs = [1 - runs[s]["cold"]["rmse"] / mf[s]["cold"]["rmse"] for s in seeds]
    vp = [runs[s]["cold"]["ndcg@10"] / pop[s]["cold"]["ndcg@10"] for s in seeds]
    m = lambda part, key: mean([runs[s][part][key] for s in seeds])
    per = " ".join(f"{v:+.1%}" for v in vs)
    print(f"| {label} | {m('cold', 'rmse'):.4f} | {mean(vs):+.1%} | {per} | {m('cold', 'ndcg@10'):.4f} "
          f"| {mean(vp):.2f}x | {m('warm', 'rmse'):.4f} | {m('warm', 'ndcg@10'):.4f} |")
row("biased MF", mf)
print(f"| popularity | | | | {mean([pop[s]['cold']['ndcg@10'] for s in seeds]):.4f} | 1.00x | "
      f"| {mean([pop[s]['warm']['ndcg@10'] for s in seeds]):.4f} |")
for m in models:
    row(f"{m} (side features)", {s: last(m, s) for s in seeds})
    row(f"{m} (no side features)", {s: last(f"{m}-nofeat", s) for s in seeds})
PY
    ;;
  scenarios)
    scen="--set federation.partition=genre --set federation.sites=4 --set security.aggregation=none --set eval.per_site=true --set sim.compare_centralized=false"
    for m in "${models[@]}"; do
      add "$m-global" sim $data $features $scen --set model.name=$m
      add "$m-local" sim $data $features $scen --set model.name=$m --set model.$m.local_towers=1
      add "$m-adapt" sim $data $features $scen --set model.name=$m --set model.$m.local_towers=2
    done
    run_all
    python3 - "$out" "${models[@]}" <<'PY'
import json, sys
out, models = sys.argv[1], sys.argv[2:]
def sites(n):
    rounds = [json.loads(l) for l in open(f"{out}/{n}/metrics.jsonl")]
    last = [r for r in rounds if "sites" in r][-1]
    return {s["site"]: s for s in last["sites"]}
kinds = ("global", "local", "adapt")  # local_towers = 0, 1, 2
print("| model | scenario (site) | test ratings | RMSE global towers | RMSE local | RMSE adapted | like AUC global | like AUC local | like AUC adapted |")
print("|---|---|---|---|---|---|---|---|---|")
for m in models:
    runs = {k: sites(f"{m}-{k}") for k in kinds}
    rmse = {k: [] for k in kinds}
    auc = {k: [] for k in kinds}
    for s in sorted(runs["global"]):
        for k in kinds:
            rmse[k].append(runs[k][s]["tasks"]["rating"]["rmse"])
            auc[k].append(runs[k][s]["tasks"]["like"]["auc"])
        count = runs["global"][s]["tasks"]["rating"]["count"]
        print(f"| {m} | {s} | {count} | " + " | ".join(f"{rmse[k][-1]:.4f}" for k in kinds) + " | "
              + " | ".join(f"{auc[k][-1]:.4f}" for k in kinds) + " |")
    mean = lambda v: sum(v) / len(v)
    print(f"| {m} | mean | | " + " | ".join(f"{mean(rmse[k]):.4f}" for k in kinds) + " | "
          + " | ".join(f"{mean(auc[k]):.4f}" for k in kinds) + " |")
    worse = sum(a > g for a, g in zip(rmse["adapt"], rmse["global"])) + \
            sum(a < g for a, g in zip(auc["adapt"], auc["global"]))
    print(f"| {m} | adapted worse than global (to full precision) | | | | {worse} of {2 * len(rmse['global'])} | | | |")
PY
    ;;
  *)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
esac
