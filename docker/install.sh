#!/bin/sh
# The one way this package is installed: `make setup` (into .venv, extras `dev`) and every image
# of docker/ (extras `worker`) run this script, so a worker has the pins a test run had.
#   PIP=.venv/bin/pip EXTRAS=dev sh docker/install.sh
set -eu
PIP="${PIP:-pip}"
EXTRAS="${EXTRAS:-worker}"
"$PIP" install --quiet --upgrade pip
"$PIP" install --quiet -e ".[${EXTRAS}]"
