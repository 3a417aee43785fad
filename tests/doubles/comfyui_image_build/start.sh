#!/bin/bash
# The start contract of the image's runner-scripts/entrypoint.sh: put the bundled ComfyUI in
# /root/ComfyUI when it has none (never overwriting what is there), then start it listening on
# every address, port 8188, followed by CLI_ARGS expanded without quotes.
set -e
cd /root
if [ ! -f /root/ComfyUI/main.py ]; then
    mkdir -p /root/ComfyUI
    cp --archive --no-clobber /default-comfyui-bundle/ComfyUI/. /root/ComfyUI/
fi
mkdir -p /root/user-scripts
export PIP_USER=true
python3 ./ComfyUI/main.py --listen --port 8188 --enable-manager --enable-manager-legacy-ui ${CLI_ARGS}
