# sed script: edgeface-cam.service -> edgeface-cam@.service, one service per extra camera.
# `systemctl enable --now edgeface-cam@door` runs with /etc/edgeface-cam/door.yaml; everything
# else (user, gallery folder, hardening) is the main unit's. Used by install.sh and the tests.
s|^Description=.*|Description=edgeface-cam face recognition, camera %i|
s|%E/edgeface-cam/config.yaml|%E/edgeface-cam/%i.yaml|
