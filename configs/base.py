"""Shared defaults for every jaxllm run. Stage configs import `get_config()` and override a few fields.

Not run on its own; see configs/pretrain.py, configs/sft.py, ... Every knob a run reads lives here with a
one-line comment, and the returned ConfigDict is locked so a misspelled override fails loudly.
"""
import ml_collections

from jaxllm import model


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # a tool stage (tokenizer | eval | chat | export | pipeline | serve) or an objective (jaxllm/losses/)
  c.stage = "pretrain"
  c.seed = 0  # the only source of randomness: init, data order, dropout, sampling
  c.workdir = ""  # output folder ('' = runs/<stage>); holding checkpoints => resume from the latest
  c.init_from = ""  # '' = random init; a jaxllm workdir / checkpoint folder; a Hugging Face model folder
  c.steps = 200  # optimizer steps in total

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.path = ""  # tokenizer folder or tokenizer-stage workdir; '' = init_from's, else built-in world's
  c.tokenizer.vocab_size = 1024  # target vocab size when a tokenizer is trained (specials included)
  c.tokenizer.train_docs = 20000  # built-in-world documents the tokenizer is trained on
  c.tokenizer.max_chars = 50_000_000  # cap on corpus characters read when training on a dataset

  c.model = model.config_section()  # every field of jaxllm.model.ModelConfig, with its default and comment there

  c.data = ml_collections.ConfigDict()
  # '' = built-in task world; a dataset name in data.dataset_info; a file, folder or glob (JSON(L) / CSV / text /
  # Parquet / Arrow, save_to_disk folders); hf:<org>/<name> (a Hugging Face dataset id: needs the network or
  # the HF_DATASETS_OFFLINE cache); an http(s) URL of a data file (network)
  c.data.name = ""
  c.data.dataset_info = ""  # path of a LLaMA-Factory style dataset_info.json
  c.data.allow_outside_paths = False  # let dataset_info.json file_name values point outside its folder
  c.data.subset = ""  # hub datasets: the subset (config name), e.g. 'main' for hf:openai/gsm8k
  c.data.split = "train"  # hub datasets / save_to_disk DatasetDicts: the split read
  c.data.eval_split = ""  # '' = hold out data.eval_fraction of data.split; else read this split as held-out
  c.data.streaming = False  # read through datasets streaming (pretrain: tokenized on the fly, never in memory)
  c.data.on_long = "truncate"  # truncate | drop: examples / pairs longer than data.seq_len
  c.data.prompt_fraction = 0.5  # truncation: share of the budget the prompt keeps when the answers overflow
  c.data.batch_size = 16  # global batch size in sequences
  c.data.seq_len = 128  # tokens per sequence
  c.data.on_bad_row = "fail"  # fail | skip (skipped rows are counted and logged)
  c.data.eval_fraction = 0.05  # share of a named dataset held out for evaluation (split by seed)
  c.data.max_examples = 0  # 0 = all; else read at most this many rows (deterministic: first N)
  c.data.doc_chars = 1000  # text rows shorter than this are joined (by newlines) into documents of ~this size
  c.data.train_examples = 20000  # built-in world: training problems generated
  c.data.eval_examples = 200  # built-in world: held-out problems generated; streamed corpus: documents held out
  c.data.tools = ""  # built-in world: SFT demonstrations call these tools ('calculator': one call per step)
  c.data.unanswerable = 0.0  # built-in world: share of training problems missing a number, answered "I don't know"

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 3e-3  # peak learning rate
  c.optim.warmup_steps = 20  # linear warmup from 0
  c.optim.min_lr_ratio = 0.1  # cosine decay ends at lr * min_lr_ratio
  c.optim.decay_steps = 0  # length of the warmup + cosine schedule; 0 = config.steps
  c.optim.weight_decay = 0.1  # AdamW decoupled weight decay on matrices
  c.optim.decay_embeddings = False  # also decay embedding / output-head matrices
  c.optim.b1 = 0.9  # Adam beta1
  c.optim.b2 = 0.95  # Adam beta2
  c.optim.eps = 1e-8  # Adam epsilon
  c.optim.grad_clip = 1.0  # global-norm clipping; 0 = off
  c.optim.grad_accum = 1  # micro-batches per step (inside the jitted step; same update as one big batch)
  c.optim.mu_dtype = ""  # dtype of Adam's first moment ('' = param dtype; 'bfloat16' halves its memory)
  c.optim.name = "adamw"  # adamw | galore (Adam moments in a rank-r gradient projection; jaxllm/galore.py)
  c.optim.galore_rank = 128  # galore: projection rank (matrices whose smaller side is <= this get plain Adam)
  c.optim.galore_update_every = 200  # galore: steps between refreshes of the projection (SVD of the gradient)
  c.optim.galore_scale = 0.25  # galore: multiplier of the projected-back update (the paper's alpha)

  c.loss = ml_collections.ConfigDict()
  c.loss.z_loss = 0.0  # coefficient of the log(Z)^2 stabiliser on LM logits
  c.loss.chunk_size = 0  # >0: head + cross-entropy over vocabulary slices this wide (never all logits at once)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # data-parallel axis size; -1 = fill with the remaining devices
  c.mesh.fsdp = 1  # fully-sharded data-parallel axis size (params/optimizer split along 'embed')
  c.mesh.tensor = 1  # tensor-parallel axis size (heads, mlp, vocab)

  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 0  # 0 = full fine-tuning; > 0 = LoRA adapters of this rank
  c.lora.alpha = 16.0  # adapter scale is alpha / rank
  c.lora.dropout = 0.0  # dropout on the adapter input
  c.lora.targets = "q,k,v,o,gate,up,down"  # comma-separated projections that get adapters
  c.lora.quantize = "none"  # none | int8 | nf4: store the frozen base of the targeted projections quantized (QLoRA)
  c.lora.quant_block = 64  # inputs per absmax scale of the quantized base
  c.lora.double_quant = True  # quantize those scales too (int8 + one f32 per 256 outputs), as QLoRA's DQ
  c.lora.quantize_embeddings = True  # with lora.quantize: the embedding and output head too (False: 16-bit, as QLoRA)
  c.lora.plus_ratio = 1.0  # LoRA+: the b matrices' learning rate is this x the rest's (paper: 16)
  c.lora.dora = False  # DoRA: a trainable magnitude per output column beside the low-rank direction
  c.lora.rslora = False  # rsLoRA: adapter scale alpha / sqrt(rank) instead of alpha / rank

  c.train = ml_collections.ConfigDict()
  c.train.max_skipped_steps = 10  # stop the run after this many consecutive non-finite (skipped) steps

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 100  # steps between saves (the last step is always saved)
  c.checkpoint.keep = 2  # checkpoints kept

  c.log = ml_collections.ConfigDict()
  c.log.every = 10  # steps between logged train metrics
  c.log.progress = True  # tqdm bar (only when stderr is a terminal and not under CI)
  c.log.tensorboard = True  # also write TensorBoard event files
  c.log.wandb = False  # also log to Weights & Biases (optional; WANDB_MODE=offline keeps runs local)
  c.log.wandb_project = ""  # W&B project ('' = wandb's default / WANDB_PROJECT)
  c.log.wandb_entity = ""  # W&B team or user ('' = your default entity)
  c.log.wandb_run_name = ""  # W&B run name ('' = the workdir's folder name)
  c.log.wandb_tags = ""  # comma-separated W&B tags
  c.log.wandb_group = ""  # W&B group ('' = none; sweeps set the sweep's name, the pipeline its workdir's)
  c.log.traceback = False  # show the Python traceback of a user error too (else one line, exit status 2)

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 100  # steps between held-out evaluations (and always after the last step)
  c.eval.at_start = False  # also evaluate the starting model at step 0 (a fresh run only), so curves begin there
  c.eval.batches = 4  # held-out batches per loss evaluation
  c.eval.task = ""  # stage eval: perplexity | accuracy | classification | pair_accuracy | lm_eval:<tasks>

  c.sample = ml_collections.ConfigDict()
  c.sample.num = 3  # samples printed at the end of training
  c.sample.prompt = ""  # '' = prompts from the held-out data

  # How a stage generates: printed samples, chat replies, GRPO rollouts, and (always greedy) evaluation answers;
  # the fields of jaxllm.sampling.SamplingParams plus the system turn
  c.sampling = ml_collections.ConfigDict()
  c.sampling.max_new_tokens = 64  # tokens generated per answer / sample / completion
  c.sampling.temperature = 0.0  # 0 = greedy (evaluation metrics decode greedily whatever this says)
  c.sampling.top_k = 0  # sample among the k most likely tokens; 0 = off
  c.sampling.top_p = 1.0  # nucleus sampling mass; 1 = off
  c.sampling.lookahead = 0  # greedy only: n-gram drafted tokens checked per step (jaxllm/speculative.py); 0 = off
  c.sampling.system = ""  # system turn opening each generated conversation ('' = none, or the stage's default)

  # Tools the model may call while generating (chat, evaluation, GRPO rollouts; jaxllm/tools/)
  c.tools = ml_collections.ConfigDict()
  c.tools.names = ""  # comma-separated: calculator, lookup; '' = no tools (generation never stops for a call)
  c.tools.max_calls = 4  # tool calls per reply; a reply still calling after this many is cut there
  c.tools.table = ""  # the lookup tool's table (JSON object or key,value CSV); '' = the built-in world's prices
  # chat: show the tools' JSON schemas in the system turn (models that learnt tools from schemas, e.g. Qwen);
  # the built-in world's demonstrations name the calculator in their system prompt instead (False for them)
  c.tools.schema = True

  c.dist = ml_collections.ConfigDict()
  c.dist.coordinator = ""  # host:port of process 0; '' = single process (or auto-detected by jax)
  c.dist.num_processes = 1  # processes in the job
  c.dist.process_id = 0  # this process's index
  c.dist.auto = False  # let jax detect the cluster (SLURM, Cloud TPU, ...) and join it
  return c


def use_tiny_model(c: ml_collections.ConfigDict) -> None:
  """The `:tiny` smoke-test sizes: a 512-token tokenizer on 2000 documents and a 2-layer d_model 64 model. Every
  stage's tiny config uses these, so one stage's tiny workdir is a valid init_from for the next."""
  c.tokenizer.train_docs = 2000
  c.tokenizer.vocab_size = 512
  c.model.update(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=128, max_seq_len=128)
