# Two commands on a fresh machine: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install buf run test proto proto-check migrate lint bench soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Applies migrations, then serves on GRPC_HOST:GRPC_PORT (127.0.0.1:50051).
# Without DATABASE_URL an embedded PostgreSQL keeps its data under .data/.
run: install
	@$(BIN)/python -m devtools.devserver

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

PROTOS := $(wildcard protos/blog/v1/*.proto)
PROTOC = $(BIN)/python -m grpc_tools.protoc -I protos \
	--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
	--python_out=$(1) --mypy_out=$(1) --grpc_python_out=$(1) --mypy_grpc_out=$(1) \
	--include_imports --include_source_info --descriptor_set_out=$(1)/blog/v1/descriptors.binpb $(PROTOS)

proto: install
	rm -rf generated/blog && mkdir -p generated/blog/v1
	$(call PROTOC,generated)
	touch generated/blog/__init__.py generated/blog/v1/__init__.py generated/blog/v1/py.typed

# Fails when generated/ differs from what `make proto` writes (CI runs it).
proto-check: install
	rm -rf .proto-check && mkdir -p .proto-check/blog/v1
	$(call PROTOC,.proto-check)
	touch .proto-check/blog/__init__.py .proto-check/blog/v1/__init__.py .proto-check/blog/v1/py.typed
	diff -r generated/blog .proto-check/blog -x __pycache__ || { echo "generated/ is stale: run make proto"; exit 1; }
	rm -rf .proto-check

migrate: install
	$(BIN)/alembic upgrade head

# buf lints and formats protos/ (buf.yaml). It is the npm package @bufbuild/buf (the real binary),
# pinned here and installed under .tools/ (gitignored); a new BUF_VERSION reinstalls it.
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
BUF_STAMP := .tools/.buf-$(BUF_VERSION)

buf: $(BUF_STAMP)

$(BUF_STAMP):
	@command -v npm >/dev/null || { echo "make lint needs npm to install buf $(BUF_VERSION): install Node.js and npm (Debian: apt-get install nodejs npm), then run make lint again"; exit 1; }
	rm -rf .tools
	npm install --prefix .tools --no-audit --no-fund --ignore-scripts --save-exact --loglevel=error @bufbuild/buf@$(BUF_VERSION)
	touch $@

lint: install $(BUF_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BUF) lint
	$(BUF) format --diff --exit-code

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

soak: install
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .tools .data .pytest_cache .mypy_cache .ruff_cache
