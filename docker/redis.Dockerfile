# Redis 7 from Debian (in the base image; see devstack/docker_images.py). Build context: docker/.
# The command in compose.yml keeps nothing on disk, like the production broker.

ARG BASE_IMAGE=certwright-base:bookworm
FROM ${BASE_IMAGE}
USER redis
WORKDIR /var/lib/redis
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
