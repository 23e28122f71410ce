"""Notebook-first re-implementations of recent papers on learning agents, reproducible end to end

Modules:

- `agora.core.didactic`: Small students pretrained on single-turn problems, and the ways to finetune them on teacher/student dialogues that the feedback papers compare (single-turn SFT and RL, SFT on successful dialogues, multi-turn RL over whole conversations), each a function of a model and a list of tasks; trained models are cached stages, built in parallel processes.
- `agora.papers.infusion.language`: A TinyLM learns a synthetic corpus in which a prompt is completed by a majority word and, less often, a minority word; a third word never follows it. We edit 1% of the documents (a few character substitutions each) through the influence approximation to raise either the minority completion (an *existing* behaviour) or the unseen one (a *new* behaviour), retrain from scratch, and compare with random edits of the same size. Feeds `language`.
- `agora.papers.rl2f.gap_transfer`: Cumulative accuracy by turn with a teacher for the untrained small student, RL²F, single-turn RL and a ~5x larger untrained model; how often each repeats its wrong answer after feedback; and, trained on math only, how each does on held-out families with a teacher and on maze and Mastermind with only the environment's feedback. Feeds `gain_across_turns`, `repeat_rate`, `ood_transfer` and the `main_results` table."""

__version__ = "0.0.1"
