#!/usr/bin/env python3
"""Generate the committed VCTK splits in recipes/vctk/splits/ (run once; the outputs are committed).

The rules, all deterministic and independent of which VCTK release is on disk:

* ``unseen_speakers.txt``: 20 speakers (10 F, 10 M) held out of training entirely, for one-shot
  conversion to and from voices the model never saw. AdaIN-VC (Chou, Yeh & Lee, Interspeech 2019)
  also held out 20 VCTK speakers as its unseen set; theirs were a random draw that was not published,
  so this list is our own draw: ``random.Random("vctk-unseen-<seed>-<gender>").sample`` over the
  speakers of that gender, sorted by id. p315 (no transcripts in either release) and p280 / s5 (not in
  the 0.80 speaker table) are never drawn.
* ``valid_utterances.txt``: for every SEEN speaker, utterances 001-024. In VCTK these are the
  elicitation paragraph ("Please call Stella ...") and the Rainbow Passage, which every speaker reads,
  so holding them out of training gives parallel validation/evaluation sentences (a ground truth for
  MCD) whose text the model never heard from anyone. Ids that a release lacks are simply absent.
* ``eval_pairs.csv``: the fixed conversion list for stage 5, written with VCTK utterance ids, resolved
  to files by ``prepare_vctk.py``:
  - 40 ``unseen`` pairs, 10 each of F->F, F->M, M->F, M->M, every unseen speaker a source twice and a
    target twice; the source is one of the shared sentences 002-024 of the source speaker;
  - 20 ``seen`` pairs (5 per gender combination) between seen speakers, the source again a
    validation sentence;
  - ``target``: three reference utterances of the target (025-027; ``prepare_vctk.py`` takes the next
    existing numbers when one is missing); ``ground_truth``: the target saying the source's sentence
    (same number; ``prepare_vctk.py`` checks that the texts match and otherwise searches by text).

Usage: ``python recipes/vctk/local/make_splits.py [--seed 0] [--out recipes/vctk/splits]``
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

# VCTK speaker ids and genders from the corpus's speaker-info.txt (108 speakers of release 0.80; the
# 109th, p280, has no row there). Ids only, no audio: enough to draw balanced splits without the corpus.
SPEAKER_GENDERS = """
p225:F p226:M p227:M p228:F p229:F p230:F p231:F p232:M p233:F p234:F p236:F p237:M p238:F p239:F p240:F
p241:M p243:M p244:F p245:M p246:M p247:M p248:F p249:F p250:F p251:M p252:M p253:F p254:M p255:M p256:M
p257:F p258:M p259:M p260:M p261:F p262:F p263:M p264:F p265:F p266:F p267:F p268:F p269:F p270:M p271:M
p272:M p273:M p274:M p275:M p276:F p277:F p278:M p279:M p281:M p282:F p283:F p284:M p285:M p286:M p287:M
p288:F p292:M p293:F p294:F p295:F p297:F p298:M p299:F p300:F p301:F p302:M p303:F p304:M p305:F p306:F
p307:F p308:F p310:F p311:M p312:F p313:F p314:F p315:M p316:M p317:F p318:F p323:F p326:M p329:F p330:F
p333:F p334:M p335:F p336:F p339:F p340:F p341:F p343:F p345:M p347:M p351:F p360:M p361:F p362:F p363:M
p364:M p374:M p376:M
"""
EXTRA_SPEAKERS = ["p280", "s5"]  # in release 0.92 but without a gender in the 0.80 table: seen, never paired
NO_TEXT = {"p315"}  # transcripts missing in every release
N_UNSEEN_PER_GENDER = 10  # 20 unseen speakers, as AdaIN-VC
VALID_NUMBERS = range(1, 25)  # 001-024: the shared paragraph + Rainbow Passage (see module docstring)
SOURCE_NUMBERS = range(2, 25)  # 002-024 as conversion sources; 001 ("Please call Stella.") is under 1 s
REF_NUMBERS = (25, 26, 27)  # first newspaper sentences: each speaker's own text, never a validation sentence
UNSEEN_PAIRS_PER_COMBO = 10
SEEN_PAIRS_PER_COMBO = 5
PAIR_FIELDS = ["source", "target", "ground_truth", "target_speaker", "set", "output"]


def speaker_genders() -> dict[str, str]:
    pairs = (item.split(":") for item in SPEAKER_GENDERS.split())
    return {speaker: gender for speaker, gender in pairs}


def draw_unseen(genders: dict[str, str], seed: int) -> list[tuple[str, str]]:
    chosen = []
    for gender in ("F", "M"):
        pool = sorted(s for s, g in genders.items() if g == gender and s not in NO_TEXT)
        picked = random.Random(f"vctk-unseen-{seed}-{gender}").sample(pool, N_UNSEEN_PER_GENDER)
        chosen += [(speaker, gender) for speaker in sorted(picked)]
    return chosen


def make_pairs(groups: dict[str, list[str]], per_combo: int, label: str, rng: random.Random,
               start: int) -> list[dict]:
    """Gender-combination-balanced pairs with shifted permutations (no speaker paired with itself)."""
    pairs = []
    for src_gender in ("F", "M"):
        for tgt_gender in ("F", "M"):
            sources = rng.sample(groups[src_gender], len(groups[src_gender]))
            targets = sources[1:] + sources[:1] if src_gender == tgt_gender else \
                rng.sample(groups[tgt_gender], len(groups[tgt_gender]))
            for i in range(per_combo):
                source, target = sources[i % len(sources)], targets[i % len(targets)]
                number = rng.choice(SOURCE_NUMBERS)
                index = start + len(pairs)
                pairs.append({
                    "source": f"{source}_{number:03d}",
                    "target": ";".join(f"{target}_{n:03d}" for n in REF_NUMBERS),
                    "ground_truth": f"{target}_{number:03d}",
                    "target_speaker": target,
                    "set": label,
                    "output": f"{index:03d}_{label}_{src_gender}{tgt_gender}_{source}_{number:03d}_to_{target}.wav",
                })
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the unseen-speaker and pair draws")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "splits",
                        help="output folder (default: recipes/vctk/splits)")
    args = parser.parse_args(argv)
    genders = speaker_genders()
    unseen = draw_unseen(genders, args.seed)
    unseen_ids = {speaker for speaker, _ in unseen}
    seen = [s for s in sorted(genders) if s not in unseen_ids] + EXTRA_SPEAKERS

    args.out.mkdir(parents=True, exist_ok=True)
    header = [
        "# VCTK speakers held out of training entirely (10 F, 10 M), as AdaIN-VC held out 20 speakers.",
        f"# Generated by recipes/vctk/local/make_splits.py --seed {args.seed}. Columns: speaker gender",
    ]
    (args.out / "unseen_speakers.txt").write_text("\n".join(header + [f"{s} {g}" for s, g in unseen]) + "\n")
    valid = [f"{speaker}_{n:03d}" for speaker in seen for n in VALID_NUMBERS]
    header = [
        "# Validation utterances of seen speakers, never trained on: numbers 001-024 (the paragraph and Rainbow",
        "# Passage every VCTK speaker reads). Generated by recipes/vctk/local/make_splits.py; ids a release lacks",
        "# are ignored.",
    ]
    (args.out / "valid_utterances.txt").write_text("\n".join(header + valid) + "\n")

    rng = random.Random(f"vctk-pairs-{args.seed}")
    unseen_groups = {g: [s for s, gender in unseen if gender == g] for g in ("F", "M")}
    pairs = make_pairs(unseen_groups, UNSEEN_PAIRS_PER_COMBO, "unseen", rng, 0)
    seen_groups = {g: [s for s in seen if genders.get(s) == g and s not in NO_TEXT] for g in ("F", "M")}
    pairs += make_pairs(seen_groups, SEEN_PAIRS_PER_COMBO, "seen", rng, len(pairs))
    with open(args.out / "eval_pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PAIR_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(pairs)
    print(f"wrote {args.out}: {len(unseen)} unseen speakers, {len(valid)} validation ids, {len(pairs)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
