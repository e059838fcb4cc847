"""A label-free collapse alarm: has this run left the regime where its reward can be trusted, judged only from
what the learner itself sees?

    fired = collapse_alarm(history)     # history: metrics.jsonl's rows so far, the newest last

Self-rewarded training collapses in recognisable ways (SRT paper, Sec. 5; Co-rewarding, arXiv 2508.00410). Under
the vote the policy learns to agree with itself rather than to be right: its samples converge on one answer per
prompt while it drifts far from where it started (the KL to the starting policy jumps) and its outputs degenerate
(responses shrink). The true accuracy falls at the same time, but a label-free run cannot see that; these signals
it can.

The alarm fires on a step when, averaged over the last WINDOW steps, any of these holds:
  - the KL to the starting policy is at least KL per token;
  - the response length has moved more than LENGTH (a fraction) from its average over the first BASELINE steps;
  - the parse rate (answers in a box) has fallen below PARSE times its average over the first BASELINE steps.
It needs BASELINE steps of history (the run's first steps, read back from metrics.jsonl on a resume), so it cannot
fire before step 10.

The thresholds were set on the README's runs ("Beyond the vote": Table 1 on the embedded task, Table 2 in the
collapse setting; their per-step histories are in assets/findings.json), and every number below is measured on
those same runs: an in-sample fit, not a test on runs the thresholds had not seen.
  - Healthy runs (the 13 embedded-task runs whose held-out avg@8 never fell 5 points below its start) never fired.
    The default run's 5-step KL peaks at 0.023 (0.039 on seed 1), the other runs at the default learning rate at
    0.053 at most; the run at twice that rate (1e-4), which gives back most of its gain without collapsing, peaks
    at 0.064 at step 109 (0.0799 at step 140, just under the 0.08 threshold, in an earlier version's run). Their
    5-step lengths stay within 2.3% of the start, their parse rates within 1%.
  - Collapsing runs (Table 2: sums of 3-4 numbers, learning rate 1e-4, held-out avg@8 every 5 steps, so lead times
    are good to 5 steps; every 25 on the offline curriculum's run): the alarm fired from 40 steps before to 5 steps
    after held-out avg@8 first fell 5 points below its start. Lead times: -5 (random), 0 (online curriculum, soft
    vote), 1 (negative entropy), 3 (vote), 34 (format-only), 35 (offline curriculum), 40 (self-certainty). It
    fired first on the response length on four of these runs (vote, online curriculum, where the KL crossed too,
    soft vote, negative entropy) and on the KL on the other four. The parse rate never fired first on any run: it
    fell below its threshold on three, 21 to 82 steps after the alarm had fired (the random reward on the embedded
    task and in the collapse setting, self-certainty in the collapse setting).
  - Self-certainty does not degenerate the outputs the way the vote does, or not at first: on the embedded task its
    response length and parse rate stay flat (5-step lengths within 6.2% of the start, parse rates within 1%) while
    its KL spikes, and the alarm fires on the KL only at steps 56 and 79, after held-out avg@8 had already fallen to
    0.42 and 0.47 by step 50. In the collapse setting it fires on the KL at step 10, 74 steps before the responses
    start running on to the token limit in repeated digits. A slow decline can stay under every threshold:
    format-only on seed 1 of the embedded task lost 23 points and never fired.
  - It is not specific to collapse: true labels in the collapse setting (learning rate 1e-4) gain 6.4 points of
    held-out avg@8, yet the alarm fires from step 33, on 68 of the 100 steps, because learning at that rate moves
    the policy as far from its start (5-step KL up to 0.205) as collapsing does. It says "this run has moved far",
    which a collapse always does and a fast healthy run may too.
On other models and tasks, check the thresholds against a healthy run of your own: they are module constants.
"""
import numpy as np

WINDOW = 5       # steps averaged, so one noisy batch does not fire it
BASELINE = 10    # first steps, the reference for length and parse rate
KL = 0.08        # k3 KL to the starting policy, per token (healthy runs here: at most 0.053, 0.064 at lr 1e-4)
LENGTH = 0.1     # responses 10% shorter or longer than at the start (healthy runs here: within 2.3%)
PARSE = 0.9      # a tenth fewer boxed answers than at the start (healthy runs here: within 1%)


def collapse_alarm(history: list[dict]) -> bool:
  """Whether the newest step of `history` (per-step dicts with kl, response_length, parse_rate) fires."""
  if len(history) < max(WINDOW, BASELINE):
    return False
  recent = lambda k: float(np.mean([h[k] for h in history[-WINDOW:]]))
  start = lambda k: float(np.mean([h[k] for h in history[:BASELINE]]))
  return (recent('kl') >= KL or abs(recent('response_length') / start('response_length') - 1) > LENGTH
          or recent('parse_rate') < PARSE * start('parse_rate'))


def first_alarm(history: list[dict]) -> int | None:
  """The step at which the alarm first fires over a whole history (None: never)."""
  for i in range(len(history)):
    if collapse_alarm(history[:i + 1]):
      return history[i]['step']
  return None
