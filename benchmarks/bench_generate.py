"""Generation tokens/s: ptm's decoding module against transformers' generate() on the same weights.

Builds a GPT-2, a BART and a T5 (v1.0: ReLU, tied) in transformers with random
weights, loads the same weights into ptm's models, and times greedy decoding and beam search of one
batch of prompts (sources) on each, alternating the two libraries so that both
see the same machine load. Every run generates exactly ``--new-tokens`` tokens
(end-of-text suppressed until then), so both do the same work; the outputs are
also compared token for token. Prints one line per case and the ratio
ptm / transformers (above 1: ptm is faster).

    python benchmarks/bench_generate.py                 # CPU, gpt-mini / bart-mini / t5-mini shapes
    python benchmarks/bench_generate.py --families t5   # one family's rows
    python benchmarks/bench_generate.py --device cuda --batch 32 --new-tokens 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

from ptmcli.convert.hf_bart import state_dict_from_hf as bart_from_hf
from ptmcli.convert.hf_t5 import state_dict_from_hf as t5_from_hf
from ptmcli.models import gpt
from ptmcli.models.bart import BartConfig, BartForConditionalGeneration
from ptmcli.models.generation import Settings, decode
from ptmcli.models.t5 import T5Config, T5ForConditionalGeneration

EOS, PAD = 2, 1


def gpt_pair(vocab: int, hidden: int, layers: int, heads: int, positions: int):
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=hidden, n_layer=layers, n_head=heads,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, eos_token_id=EOS, bos_token_id=EOS,
                                     pad_token_id=PAD)
    hf = transformers.GPT2LMHeadModel(config).eval()
    ours = gpt.GPTForCausalLM(gpt.GPTConfig(vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                                            intermediate_size=4 * hidden, max_position_embeddings=positions,
                                            hidden_dropout=0.0, attention_dropout=0.0)).eval()
    ours.load_state_dict(gpt.state_dict_from_hf(hf.state_dict()), strict=True)
    return hf, ours


def bart_pair(vocab: int, hidden: int, layers: int, heads: int, positions: int):
    config = transformers.BartConfig(vocab_size=vocab, d_model=hidden, encoder_layers=layers, decoder_layers=layers,
                                     encoder_attention_heads=heads, decoder_attention_heads=heads,
                                     encoder_ffn_dim=4 * hidden, decoder_ffn_dim=4 * hidden, max_position_embeddings=positions,
                                     dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=PAD, bos_token_id=0,
                                     eos_token_id=EOS, decoder_start_token_id=EOS, forced_bos_token_id=None,
                                     forced_eos_token_id=None)
    hf = transformers.BartForConditionalGeneration(config).eval()
    ours = BartForConditionalGeneration(BartConfig(vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                                                   intermediate_size=4 * hidden, max_position_embeddings=positions,
                                                   hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0))
    ours.load_state_dict(bart_from_hf(hf.state_dict()), strict=True)
    return hf, ours.eval()


def t5_pair(vocab: int, hidden: int, layers: int, heads: int, positions: int):
    """T5 v1.0 (ReLU, tied, decoder output scaled) with heads of hidden / heads; the decoder starts from padding."""
    head_size = hidden // heads
    config = transformers.T5Config(vocab_size=vocab, d_model=hidden, d_kv=head_size, d_ff=4 * hidden, num_layers=layers,
                                   num_heads=heads, dropout_rate=0.0, feed_forward_proj="relu", tie_word_embeddings=True,
                                   pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD)
    hf = transformers.T5ForConditionalGeneration(config).eval()
    ours = T5ForConditionalGeneration(T5Config(vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                                               intermediate_size=4 * hidden, head_size=head_size, hidden_dropout=0.0,
                                               pad_token_id=PAD, decoder_start_token_id=PAD))
    ours.load_state_dict(t5_from_hf(hf.state_dict()), strict=True)
    return hf, ours.eval()


def inputs(batch: int, longest: int, vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(longest // 2, longest + 1, (batch,), generator=gen).tolist()
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]


def padded(rows: list[list[int]], left: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, cols], mask[i, cols] = torch.tensor(row), 1
    return ids.to(device), mask.to(device)


def timed(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--families", default="gpt,bart,t5", help="comma-separated: gpt, bart, t5")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    shape = (args.vocab, args.hidden, args.layers, args.heads, 512)
    n = args.new_tokens
    print(f"device {device}, batch {args.batch}, prompts/sources of {args.prompt_len // 2}-{args.prompt_len} tokens, "
          f"{n} new tokens, hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}")
    # (pair builder, left-padded prompts, leading tokens of transformers' output that are not generated)
    families = {"gpt": (gpt_pair, True, None), "bart": (bart_pair, False, 1), "t5": (t5_pair, False, 1)}
    for name in args.families.split(","):
        build, left, skip = families[name]
        hf, ours = (m.to(device) for m in build(*shape))
        rows = inputs(args.batch, args.prompt_len, args.vocab)
        ids, mask = padded(rows, left, device)
        for beams in (1, args.beams):
            settings = Settings(max_new_tokens=n, min_new_tokens=n, num_beams=beams, stop_ids=(EOS,), pad_id=PAD)
            kwargs = dict(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                          num_beams=beams, length_penalty=1.0, early_stopping=False)

            def run_ptm(settings=settings, ours=ours, rows=rows):
                with torch.no_grad():
                    return decode(ours, rows, settings)

            def run_hf(kwargs=kwargs, hf=hf):
                with torch.no_grad():
                    return hf.generate(**kwargs)

            run_ptm(), run_hf()  # warm-up
            ptm_times, hf_times = [], []
            for _ in range(args.repeats):
                seconds, mine = timed(run_ptm, device)
                ptm_times.append(seconds)
                seconds, theirs = timed(run_hf, device)
                hf_times.append(seconds)
            cut = ids.shape[1] if skip is None else skip
            same = [r[0].ids for r in mine] == theirs[:, cut:].tolist()
            tokens = args.batch * n
            ours_tps, hf_tps = tokens / statistics.median(ptm_times), tokens / statistics.median(hf_times)
            label = "greedy" if beams == 1 else f"beam {beams}"
            print(f"{name:4s} {label:7s}  ptm {ours_tps:8.0f} tok/s   transformers {hf_tps:8.0f} tok/s   "
                  f"ratio {ours_tps / hf_tps:.2f}x   identical {same}")


if __name__ == "__main__":
    main()
