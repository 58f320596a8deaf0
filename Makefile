# Everything runs from the project's own venv, created on first use (idempotent).
VENV ?= .venv
BIN := $(VENV)/bin
# Data: $HTR_DATA_DIR, else ../shared/data beside the checkout when it is there (CI, this workplace), else
# ~/.cache/htr/data (htr.data.download.data_root); the configs name their data under it ($HTR_DATA_DIR/iam).
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: setup lock poilus handwriting-fr handwriting-en train test test-fast smoke bench pretrained pretrained-iam-all lm-iam style quality clean

setup: $(BIN)/.installed

# requirements.lock holds the exact version and hashes of every package, the CPU torch wheel included (torch 2.13.0+cpu:
# on this machine from /opt/wheels, elsewhere PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu). `make lock`
# is the one place where versions change.
$(BIN)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Re-resolve every dependency to its newest version within pyproject.toml's ranges (torch held at the CPU wheel of
# constraints-cpu.txt), reinstall the venv from the new lock and run the whole suite: review, then commit the lock.
# The lock holds every extra (train, serve, lm, server, dev): `make setup` installs all of htr, as CI tests it.
TORCH_WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
lock: setup
	$(BIN)/uv pip compile pyproject.toml --all-extras --upgrade --generate-hashes \
		--override constraints-cpu.txt $(TORCH_WHEELS) --no-emit-find-links --no-emit-index-url \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" \
		-o requirements.lock
	rm -rf $(VENV)
	$(MAKE) test

train: setup  ## train the Captcha model (tracked in MLflow, best model registered)
	$(BIN)/htr fit --config configs/captcha.yaml

test: setup  ## the whole suite, slow tests included (what CI runs)
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

smoke: setup
	$(BIN)/htr fit --config configs/captcha.yaml --trainer.max_epochs 1 --trainer.limit_train_batches 5 --trainer.limit_val_batches 2

bench: setup
	$(BIN)/python scripts/bench_captcha.py --out bench_captcha.json

# The IAM CPU recipe's starting weights, ~3 h on one core: 8,000 lines rendered in handwriting fonts, 6 epochs
# (stage 1), then twice 16,000 lines of another seed, 4 epochs from the stage before (stage 2 at max LR 0.0015,
# stage 3 at 0.001). Each stage's held-out font CER: docs/benchmarks.md.
PRETRAINED := $(HOME)/.cache/htr/pretrained
PRETRAIN := OMP_NUM_THREADS=1 $(BIN)/python scripts/pretrain_synth.py
# each later stage: more lines of a new seed, trained from the stage before (htr fit overrides after --)
NEXT_STAGE := --count 16000
pretrained: setup
	$(PRETRAIN) --weights $(PRETRAINED)/synth_iam_stage1.pt
	$(PRETRAIN) $(NEXT_STAGE) --seed 1 --lines data/synth_iam_2 --weights $(PRETRAINED)/synth_iam_stage2.pt -- \
		--trainer.max_epochs 4 --model.init_from $(PRETRAINED)/synth_iam_stage1.pt --model.scheduler.init_args.max_lr 0.0015
	$(PRETRAIN) $(NEXT_STAGE) --seed 2 --lines data/synth_iam_3 --weights $(PRETRAINED)/synth_iam.pt -- \
		--trainer.max_epochs 4 --model.init_from $(PRETRAINED)/synth_iam_stage2.pt --model.scheduler.init_args.max_lr 0.001

# The page recipe's starting weights (configs/poilus.yaml), ~20 min on one core after `make pretrained`: the IAM CPU
# recipe fit on $HTR_DATA_DIR/iam with no test writers (34 writers train, 4 validate), so that the wills'
# training starts from real handwriting rather than fonts. docs/reference.md, "Pages: ALTO and PAGE XML".
IAM_ALL := --data.init_args.writer_fractions '[0.9, 0.1, 0.0]'
pretrained-iam-all: setup
	OMP_NUM_THREADS=1 $(BIN)/htr fit --config configs/iam_lines_cpu.yaml --model.init_from $(PRETRAINED)/synth_iam.pt \
		$(IAM_ALL) --trainer.default_root_dir outputs/iam_all \
		--trainer.logger.init_args.experiment_name iam_all --registry.enabled false
	cp "$$(ls -t outputs/iam_all/*/*/checkpoints/best-*.ckpt | head -1)" $(PRETRAINED)/iam_all.ckpt

# The IAM CPU recipe's beam-search LM and lexicon (configs/decoders/beam_words.yaml), ~2 min: the train split's lines,
# wordfreq's English words and Debian's English fortunes (scripts/prepare_text.py; apt-get download). docs/reference.md.
data/text/en.txt:
	$(BIN)/python scripts/prepare_text.py --lang en --output $@
lm-iam: setup data/text/en.txt
	$(BIN)/htr lm build --config configs/iam_lines_cpu.yaml --words en --general-text data/text/en.txt \
		--output lm/words.arpa --lexicon lm/words.txt

# The wills' recipe from the shipped French model (configs/poilus.yaml), one command on a fresh clone: the LM of the
# wills' training split + french_lines' transcriptions + wordfreq's French, then the fit, which registers htr-poilus
# and tests its best checkpoint on held-out documents (document fold 0).
data/text/fr_lines.txt:
	mkdir -p $(@D)
	find $(or $(HTR_DATA_DIR),../shared/data)/french_lines -name '*.gt.txt' | sort | xargs awk 1 > $@
lm/poilus.arpa: data/text/fr_lines.txt | setup
	$(BIN)/htr lm build --config configs/poilus.yaml --words fr --general-text data/text/fr_lines.txt \
		--output $@ --lexicon lm/poilus.txt
poilus: setup lm/poilus.arpa  ## fine-tune handwriting-fr to the wills, register it, print its held-out CER
	OMP_NUM_THREADS=2 $(BIN)/htr fit --config configs/poilus.yaml --config configs/decoders/beam_words.yaml \
		--model.decoder.init_args.lm lm/poilus.arpa --model.decoder.init_args.lexicon lm/poilus.txt --test_after_fit true

# Rebuild the shipped handwriting-fr (htr/weights/), ~10 h on one core: configs/french_lines.yaml on all of french_lines
# (3% of the pages for val) in seven fits, each from the best checkpoint of the one before with a new one-cycle schedule
# (FR_FITS: epochs:max LR, as the shipped weights were made), its LM (french_lines' train split + wordfreq's French,
# gzip-compressed, whole within the 10 MiB budget), then scripts/ship_model.py with the card's data, licences and
# held-out figures (scripts/cards/handwriting-fr.json).
FR_FITS := 5:0.002 4:0.002 7:0.0015 11:0.001 10:0.001 27:0.001 25:0.0008
lm/fr.arpa: | setup
	$(BIN)/htr lm build --config configs/french_lines.yaml --words fr --output $@ --lexicon lm/fr.txt
handwriting-fr: setup lm/fr.arpa
	start=; for fit in $(FR_FITS); do \
		OMP_NUM_THREADS=1 $(BIN)/htr fit --config configs/french_lines.yaml $${start:+--model.init_from "$$start"} \
			--trainer.max_epochs $${fit%:*} --model.scheduler.init_args.max_lr $${fit#*:} \
			--trainer.default_root_dir outputs/french_lines --registry.enabled false || exit 1; \
		start="$$(ls -t outputs/french_lines/*/*/checkpoints/best-*.ckpt | head -1)"; \
	done; \
	$(BIN)/python scripts/ship_model.py --name handwriting-fr --card-json scripts/cards/handwriting-fr.json \
		--checkpoint "$$start" --lm lm/fr.arpa --lexicon lm/fr.txt --dtype float16 \
		--decoder-config configs/decoders/beam_words.yaml

# handwriting-en's synthetic stages, ~1 h on one core: twice 16,000 lines rendered in the Debian handwriting fonts with
# the words of the IAM CPU recipe's train split (never its test writers' text), 4 epochs each, the first from
# handwriting-fr (held-out font CER 16.7%, then 12.1%). The shipped handwriting-en started from handwriting-fr at val
# CER 0.283; a rebuild starts from the handwriting-fr installed now, so its figures may differ.
SYNTH_EN := $(PRETRAINED)/synth_en.pt
$(SYNTH_EN): htr/weights/handwriting-fr.safetensors | setup
	$(PRETRAIN) $(NEXT_STAGE) --seed 1 --lines data/synth_en_1 --weights $(PRETRAINED)/synth_en_stage1.pt -- \
		--trainer.max_epochs 4 --model.init_from handwriting-fr --model.scheduler.init_args.max_lr 0.0015
	$(PRETRAIN) $(NEXT_STAGE) --seed 2 --lines data/synth_en_2 --weights $@ -- \
		--trainer.max_epochs 4 --model.init_from $(PRETRAINED)/synth_en_stage1.pt --model.scheduler.init_args.max_lr 0.001

# Rebuild the shipped handwriting-en (htr/weights/), ~75 min on one core: the synthetic stages above, then the IAM CPU
# recipe from them on $HTR_DATA_DIR/iam (34 writers train, 4 validate; 12 min), its LM (the training writers' lines,
# wordfreq's English words and Debian's fortunes; shipped gzip-compressed), then scripts/ship_model.py with the
# card's data, licences and held-out figures (scripts/cards/handwriting-en.json: writer folds, each fit without its
# test writers).
lm/en.arpa: data/text/en.txt | setup
	$(BIN)/htr lm build --config configs/iam_lines_cpu.yaml $(IAM_ALL) --words en --general-text data/text/en.txt \
		--output $@ --lexicon lm/en.txt
handwriting-en: setup lm/en.arpa $(SYNTH_EN)
	OMP_NUM_THREADS=1 $(BIN)/htr fit --config configs/iam_lines_cpu.yaml --model.init_from $(SYNTH_EN) $(IAM_ALL) \
		--trainer.default_root_dir outputs/handwriting_en --trainer.logger.init_args.experiment_name handwriting_en \
		--registry.enabled false
	$(BIN)/python scripts/ship_model.py --name handwriting-en --card-json scripts/cards/handwriting-en.json \
		--checkpoint "$$(ls -t outputs/handwriting_en/*/*/checkpoints/best-*.ckpt | head -1)" \
		--lm lm/en.arpa --lexicon lm/en.txt --dtype float16 --decoder-config configs/decoders/beam_words.yaml

style: setup
	$(BIN)/ruff format htr tests scripts
	$(BIN)/ruff check --fix htr tests scripts

quality: setup
	$(BIN)/ruff check htr tests scripts
	$(BIN)/ruff format --check htr tests scripts

clean:
	rm -rf outputs lightning_logs .pytest_cache
