"""The noise-embedding language model of seed 003, built as faithfully as it runs (issue #18).

Results and verdict: ``docs/NOISE_LM.md``. Each element of the seed, how it is read here, and
the algorithm chosen (module in brackets):

1. *Random vectors for the token dictionary, "weights"* [keys]. Each token gets a key drawn
   uniformly from [0, 1)^dim by a seeded NumPy generator. Keys are never trained.
2. *Context embedding / decoder embedding.* The keys of the input tokens and of the tokens
   to produce.
3. *Noise embedding, subtracted from each context token: context − noise ≈ target*
   [noise]. Learned: one noise vector per hashed context (the last 1..``order`` tokens, plus
   the empty context), from every (context, next token) pair of the training text, by the
   running mean ``n ← n + (key[c] − key[t] − n) / count`` (the least-squares noise).
   Alternatives: one noise per (token, position) summed over positions (a skip-gram-like
   model; it cannot tell "a b" from "b a" apart at one offset) or per whole-context hash
   only (no smoothing). Chosen: per hashed context at every length, combined with
   Witten–Bell weights, which is also the reading of *"why can't we use multiple?"*.
   Honest consequence: ``key[c] − noise`` cancels ``key[c]``; what is learned is the mean key
   of the context's followers, i.e. the row ``P(· | context) @ keys`` of the Markov
   transition matrix compressed by a random projection. The seed's closing line (*"reconstruct
   the transition matrix of a markov model"*) is literally what the tables hold.
4. *Nearest key by digit-weighted Hamming distance, "cuckoo hashing where similar values are
   stored near each other"* [keys, lookup]. The distance (digit j from the left weighs
   ``f**-j``, penalty by numeric gap of digits) is exactly L1 between digit-expanded vectors,
   so a real index can search it: faiss ``IndexHNSWFlat`` under L1 (a graph where similar
   keys sit near each other) or faiss ``IndexLSH`` (sign hashes compared by Hamming distance).
   Cuckoo hashing proper answers exact-match queries only, so it cannot find a *nearest* key;
   LSH/HNSW is the closest real structure. ``exact`` (NumPy, all distances) is the reference.
   Departure, measured as an ablation: a centroid of many keys sits near the cube's middle,
   where the same few "hub" keys are nearest to every flat context; ``hub`` subtracts each
   key's distance to the empty context's centroid (for squared L2 this cancels key norms).
5. *Substitute the canonical key, look up its token, compare with the training output.* The
   lookup's token is the prediction (accuracy); for perplexity, the closest quantity the model
   defines is ``p ∝ exp(−distance / τ)`` mixed with an ε unigram floor, τ and ε fit on a dev
   split (:meth:`NoiseLM.calibrate`).
6. *Pseudo-Markov node A with links B (training transitions) and C (generated from A's past
   states).* Read as: A is the encoder embedding, B the learned noise tables; "which noise
   embedding to use when we loop back" is the choice among context lengths, made here by the
   Witten–Bell weights. A separately learned C is not built: the seed drops it itself (*"what
   this doesn't do is give us variable length"*) for the middle layer.
7. *Middle layer "key": means over many input/output pairs mapping the input's variance to the
   output's mean and variance; stop when inside them* [middle]. Pairs are training sentences
   cut at a seeded random point. Learned: the running means ``XᵀX/m`` and ``XᵀY/m`` of input
   statistics (log length, key variance, mean key) and output statistics, solved as ridge
   regression; residual mean squares are the predicted variances. Stop rule: a stub ends at a
   sentence stop, end-of-text, or at ``exp(predicted log length + 2σ)`` tokens.
8. *Many output stubs pruned by minimax / alpha-beta / plausibility orderings, "discard the
   worst, each in turn"* [model.stubs]. Minimax and alpha-beta need an opponent; there is none,
   so the fair reading is a beam: each step every stub proposes its nearest keys, the worst
   are discarded, and finished stubs are ranked by mean log-probability + the middle layer's
   Gaussian plausibility. A seed makes it sampling (Gumbel top-k) instead of a beam.
9. *Scattershot and hierarchical pairwise means, L0 … Ln; keep the layer Lm that reproduces
   the output best; compare a prompt with past training sentences* [scattershot]. Kept: the
   level with ``slots`` vectors, means of ``scatter`` random position subsets, and the mean
   half-gap ``|w − x| / 2`` (the seed's formula, which is not a mean). Retrieval is by L1
   ("manhattan distance") over training sentences, exact or HNSW.

Everything random takes ``NoiseLMConfig.seed`` (NumPy ``default_rng``); faiss's LSH rotation
and HNSW build are deterministic on one thread. ``NoiseLM.save``/``load`` write/read a
directory (config.json, tokenizer.json, arrays.npz) that ``sazanami.load("noise-lm:DIR")``
serves through the backend protocol [backend]. Needs faiss only for ``hnsw``/``lsh``
(``pip install 'sazanami[research]'``).
"""

from sazanami.research.noise_lm.config import NoiseLMConfig
from sazanami.research.noise_lm.model import NoiseLM

__all__ = ["NoiseLM", "NoiseLMConfig"]
