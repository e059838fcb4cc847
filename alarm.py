"""A label-free collapse alarm: has this run left the regime where its reward can be trusted, judged only from
what the learner itself sees?

    fired = collapse_alarm(history)     # history: metrics.jsonl's rows so far, the newest last

Self-rewarded training collapses in recognisable ways (SRT paper, Sec. 5; Co-rewarding, arXiv 2508.00410). Under
the vote the policy learns to agree with itself rather than to be right: its samples converge on one answer per
prompt while it drifts far from where it started (the KL to the starting policy jumps) and its outputs degenerate
(responses shrink). Under other label-free rewards the outputs degenerate in other directions (self-certainty
lengthens them and stops boxing answers). The true accuracy falls at the same time, but a label-free run cannot
see that; these signals it can.

The alarm fires on a step when, averaged over the last WINDOW steps, any of these holds:
  - the KL to the starting policy is at least KL per token;
  - the response length has moved more than LENGTH (a fraction) from its average over the first BASELINE steps;
  - the parse rate (answers in a box) has fallen below PARSE times its average over the first BASELINE steps.
The thresholds were set on the embedded task (README, "Beyond the vote"). There, healthy runs stay far inside
them: the default run's 5-step KL peaks near 0.02 and a run at twice its learning rate, which declines slowly
without collapsing, near 0.05; their lengths stay within 2% of the start and their parse rates near 1. The
collapsing runs cross them a step or two before held-out accuracy is 5 points down. On other models and tasks,
check them against a healthy run of your own: they are module constants.
"""
import numpy as np

WINDOW = 5       # steps averaged, so one noisy batch does not fire it
BASELINE = 10    # first steps, the reference for length and parse rate
KL = 0.08        # k3 KL to the starting policy, per token (healthy runs here: below 0.05)
LENGTH = 0.1     # responses 10% shorter or longer than at the start (healthy runs here: within 2%)
PARSE = 0.9      # a tenth fewer boxed answers than at the start


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
