"""Built-in model v3 (issue 27): the prompt splitter, the endless world, the causal tokenizer and the
chunk-causal denoiser. CPU only and small: tiny configurations, a few frames."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from generator.builtin import world
from generator.builtin.text import object_phrases, parse_objects


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ phrasing
def asked(prompt):
    return [(o.colour, o.shape, o.direction) for o in parse_objects(prompt)]


@pytest.mark.parametrize("prompt, objects", [
    # joined by words that appear in no list of the code
    ("a red circle going left with a blue square going up", [("red", "circle", "left"), ("blue", "square", "up")]),
    ("green triangle moving right plus a yellow circle moving down",
     [("green", "triangle", "right"), ("yellow", "circle", "down")]),
    # the direction before the object, the colour after the shape
    ("left-moving green circle next to an upward white square",
     [("green", "circle", "left"), ("white", "square", "up")]),
    ("a circle in magenta going right together with a square in yellow going left",
     [("magenta", "circle", "right"), ("yellow", "square", "left")]),
    # three objects, and one
    ("white circle going down, yellow square going right, cyan triangle going left",
     [("white", "circle", "down"), ("yellow", "square", "right"), ("cyan", "triangle", "left")]),
    ("there is a red circle and it travels left", [("red", "circle", "left")]),
])
def test_objects_are_split_by_their_colour_and_shape_mentions(prompt, objects):
    assert asked(prompt) == objects
    phrases = object_phrases(prompt)
    assert len(phrases) == len(objects)
    if len(objects) > 1:
        assert phrases == [f"a {c} {s} moving {d}" for c, s, d in objects]


def test_the_held_out_phrasings_are_read_by_the_evaluator_and_not_by_the_splitter():
    import inspect
    import os

    from generator.builtin import text
    from generator.evaluate import prompt_file_items

    path = os.path.join(os.path.dirname(__file__), "data", "heldout_phrasings.txt")
    items = prompt_file_items(path, seed=1)
    counts = [len(item.get("objects", [item])) for item in items]
    assert len(items) == 39 and counts.count(2) == 24 and counts.count(3) == 8
    rng = random.Random(0)
    training = {world.caption(world.sample_scene(rng, 16, two_shapes_prob=0.5), rng) for _ in range(3000)}
    source = inspect.getsource(text)
    assert "heldout" not in source
    assert not {item["prompt"] for item in items} & training
    assert not any(item["prompt"] in source for item in items)


def test_every_caption_of_the_world_splits_into_its_objects_with_their_own_attributes():
    rng = random.Random(4)
    for i in range(300):
        scene = world.sample_scene(rng, 16, two_shapes_prob=0.5)
        prompt = world.caption(scene, rng, held_out=i % 2 == 0)
        assert asked(prompt) == [(m.colour, m.shape, m.direction) for m in scene], prompt


def test_a_prompt_without_objects_or_with_more_than_three_stays_usable():
    assert object_phrases("") == [""]
    assert object_phrases("something abstract") == ["something abstract"]
    four = "a red circle, a blue square, a green triangle and a white circle, all moving left"
    assert len(parse_objects(four)) == 3
    steer = parse_objects("now the red circle stops")
    assert (steer[0].colour, steer[0].shape, steer[0].motion) == ("red", "circle", "stop")


# ------------------------------------------------------------------ the endless world
def test_shapes_bounce_off_the_edges_and_stay_in_view_forever():
    rng = random.Random(1)
    scenes = [world.sample_scene(rng, 16, two_shapes_prob=0.5) for _ in range(4)]
    clips = world.render(scenes, 240, 32, bounce=True)  # 30 s at 8 fps
    visible = (clips.amax(dim=1) > -0.45).flatten(2).sum(-1)  # B x T shape pixels
    assert (visible > 0).all()
    straight = world.render(scenes, 240, 32)  # the v2 world: they leave
    assert ((straight.amax(dim=1) > -0.45).flatten(2).sum(-1) == 0).any()
    path = world.simulate([world.ShapeMotion("red", "circle", "right", 8, 50, 32, 2.0)], 12)[0]
    xs = [x for x, _ in path]
    assert max(xs) <= 56 and xs[-1] < xs[3]  # turned back at the right edge


def test_bounce_leaves_the_v2_world_unchanged_while_paths_stay_inside_and_apart():
    from generator.builtin.backend_v3 import closest_gap

    rng = random.Random(2)
    scenes = [world.sample_scene(rng, 16, two_shapes_prob=0.5) for _ in range(24)]
    apart = [scene for scene in scenes if closest_gap([world.Body(m) for m in scene], 16) >= world.BOUNCE_GAP]
    assert 8 <= len(apart) < len(scenes)
    assert (world.render(apart, 16, 64) - world.render(apart, 16, 64, bounce=True)).abs().max() < 1e-4


def test_objects_bounce_off_each_other_as_off_the_edges():
    """Head-on, side by side, and into a stopped one: each object moving towards the other turns back
    before their outlines come within BOUNCE_GAP less a frame's move."""
    head_on = [world.ShapeMotion("red", "circle", "right", 8, 12, 32, 1.5),
               world.ShapeMotion("blue", "square", "left", 8, 52, 32, 1.5)]
    crossing = [world.ShapeMotion("red", "circle", "right", 8, 12, 32, 1.5),
                world.ShapeMotion("blue", "square", "up", 8, 34, 56, 1.0)]
    for scene in (head_on, crossing):
        paths = world.simulate(scene, 40)
        gaps = [np.hypot(a[0] - b[0], a[1] - b[1]) - world.OUTLINE_REACH * 16 for a, b in zip(*paths)]
        assert min(gaps) > world.BOUNCE_GAP - 2 * 1.5
        assert paths[0][12][0] < paths[0][8][0]  # the red circle has turned back to the left
    stopped = world.simulate(head_on, 40, [world.Event(0, 1, "stop")])
    assert stopped[1][39] == stopped[1][0] and stopped[0][39][0] < max(x for x, _ in stopped[0])


def test_events_stop_turn_and_speed_up_a_shape():
    m = world.ShapeMotion("red", "circle", "right", 8, 20, 32, 1.5)
    events = [world.Event(4, 0, "go", "up"), world.Event(8, 0, "stop"), world.Event(10, 0, "go", "left"),
              world.Event(12, 0, "faster")]
    path = world.simulate([m], 16, events)[0]
    (x3, y3), (x7, y7), (x9, y9), (x11, _), (x12, _), (x15, _) = (path[i] for i in (3, 7, 9, 11, 12, 15))
    assert x7 == x3 and y7 < y3  # turned up at frame 4
    assert path[8] == (x9, y9) == path[9]  # stopped
    assert x11 < x9  # going left
    assert (x12 - x15) / 3 == pytest.approx(1.5 * world.SPEED_UP)  # faster


# ------------------------------------------------------------------ the causal tokenizer
def tiny_tokenizer(seed=0):
    from generator.builtin.tokenizer import CausalVideoTokenizer

    torch.manual_seed(seed)
    return CausalVideoTokenizer(latent_channels=4, levels=5, channels=(8, 8, 8), head_channels=8).eval()


def test_tokenizer_quantizes_to_its_levels_and_passes_gradients_straight_through():
    from generator.builtin.tokenizer import quantize

    z = torch.linspace(-1.5, 1.5, 31, requires_grad=True)
    q = quantize(z, 5)
    assert set(torch.round(q.detach() * 2).tolist()) <= {-2.0, -1.0, 0.0, 1.0, 2.0}
    q.sum().backward()
    assert torch.equal(z.grad, ((z >= -1) & (z <= 1)).float())  # straight through inside the clip


@pytest.mark.parametrize("kernel", [(1, 3, 3), (3, 1, 1), (3, 3, 3)])
def test_the_causal_convolution_is_its_conv3d_padded_on_the_past_side_only(kernel):
    from generator.builtin.tokenizer import CausalConv3d

    conv = CausalConv3d(5, 7, kernel)
    frames = torch.randn(2, 6, 5, 9, 9)  # frames-major: B x T x C x H x W
    past = torch.randn(2, kernel[0] - 1, 5, 9, 9)
    ours, kept = conv(frames, past)
    reference = conv.conv(torch.cat([past, frames], dim=1).transpose(1, 2)).transpose(1, 2)
    assert ours.shape == reference.shape == (2, 6, 7, 9, 9)
    assert (ours - reference).abs().max() < 1e-4 * reference.abs().max()
    assert kernel[0] == 1 or torch.equal(kept, frames[:, -(kernel[0] - 1):])  # what the next call pads with


def test_the_decoders_resizing_is_pytorchs_nearest_and_bilinear():
    import torch.nn.functional as F

    from generator.builtin.tokenizer import _bilinear, _twice_nearest

    features, colour = torch.randn(4, 8, 32, 32), torch.randn(4, 3, 16, 16)
    assert torch.equal(_twice_nearest(features), F.interpolate(features, scale_factor=2, mode="nearest"))
    spread = F.interpolate(colour, scale_factor=16, mode="bilinear", align_corners=False)
    assert _bilinear(colour, 16).shape == spread.shape and (_bilinear(colour, 16) - spread).abs().max() < 1e-5


def test_a_later_latent_never_changes_an_earlier_decoded_frame_and_streaming_matches_whole_decoding():
    from generator.builtin.tokenizer import DecoderCache

    tokenizer = tiny_tokenizer()
    with torch.no_grad():
        for module in tokenizer.modules():  # large weights, so any leak would show
            if isinstance(module, (torch.nn.Conv3d, torch.nn.Conv2d)):
                module.weight.normal_(0, 0.5)
        latents = tokenizer.encode(torch.rand(1, 3, 6, 64, 64) * 2 - 1)
        whole = tokenizer.decode(latents)
        changed = latents.clone()
        changed[:, :, 4:] = -changed[:, :, 4:]  # other future latents
        assert torch.equal(tokenizer.decode(changed)[:, :, :4], whole[:, :, :4])
        assert (tokenizer.decode(changed)[:, :, 4:] - whole[:, :, 4:]).abs().max() > 0.1
        cache = DecoderCache()
        streamed = torch.cat([tokenizer.decode(latents[:, :, i:i + 1], cache) for i in range(6)], dim=2)
    assert whole.shape == (1, 3, 6, 256, 256)
    assert (streamed - whole).abs().max() < 1e-4


def test_the_encoder_reads_each_frame_alone_and_the_tokenizer_round_trips_through_save_pretrained(tmp_path):
    from generator.builtin.tokenizer import CausalVideoTokenizer

    tokenizer = tiny_tokenizer()
    video = torch.rand(1, 3, 5, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(tokenizer.encode(video)[:, :, 2:], tokenizer.encode(video[:, :, 2:]))
        tokenizer.save_pretrained(tmp_path / "tok")
        again = CausalVideoTokenizer.from_pretrained(tmp_path / "tok")
        assert torch.equal(again(video), tokenizer(video))
    assert tokenizer.compression_ratio() == pytest.approx(256 * 256 * 24 / (16 * 16 * 4 * np.log2(5)))


# ------------------------------------------------------------------ the chunk denoiser and its backend
def test_a_steer_updates_the_objects_it_names_and_keeps_the_others():
    from generator.builtin.backend_v3 import scene_objects

    first = scene_objects("a red circle moving right and a blue square moving down")
    assert [(o["colour"], o["shape"], o["direction"], o["steer"]) for o in first] == [
        ("red", "circle", "right", False), ("blue", "square", "down", False)]
    turned = scene_objects("now the red circle moves up", first)
    assert [(o["colour"], o["direction"], o["steer"]) for o in turned] == [("red", "up", True), ("blue", "down", False)]
    stopped = scene_objects("the blue square stops", turned)
    assert [(o["colour"], o["stopped"], o["steer"]) for o in stopped] == [("red", False, False), ("blue", True, True)]
    faster = scene_objects("the red circle speeds up", stopped)
    assert faster[0]["fast"] and faster[0]["steer"] and faster[1]["stopped"] and not faster[1]["steer"]
    around = scene_objects("the red circle turns around", faster)
    assert around[0]["direction"] == "down" and around[0]["steer"]
    same = scene_objects("now the red circle moves down", around)
    assert not same[0]["steer"]  # nothing it asks changed


@pytest.fixture(scope="module")
def tiny_v3(tmp_path_factory):
    from generator.builtin.backend_v3 import BuiltinV3Backend, CausalPipeline
    from generator.builtin.causal import ChunkDenoiser

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("v3")
    tokenizer = tiny_tokenizer()  # (before the denoiser: the seed's draws in the order they always had)
    CausalPipeline(tokenizer, ChunkDenoiser(latent_channels=4, dim=32, layers=1, heads=2)).save_pretrained(folder)
    backend = BuiltinV3Backend(str(folder))
    backend.load()
    return backend


def test_v3_makes_text_image_and_video_to_video_clips_chunk_after_chunk(tiny_v3):
    from generator.interface import GenerationRequest

    def generate(**kw):
        return tiny_v3.generate(GenerationRequest(prompt="a red circle moving left", seed=3, **kw)).frames

    clip = generate(num_frames=10)
    assert clip.shape == (10, 256, 256, 3) and clip.dtype == np.uint8
    assert np.array_equal(generate(num_frames=10), clip)  # the seed decides
    assert generate(num_frames=6, width=128, height=64).shape == (6, 64, 128, 3)
    from_image = generate(num_frames=6, image=clip[0])
    assert from_image.shape == (6, 256, 256, 3)
    continued = generate(num_frames=8, start_frames=clip[-3:])
    assert continued.shape == (8, 256, 256, 3)
    assert np.array_equal(generate(num_frames=10, video=clip, strength=0.0), clip)
    assert generate(num_frames=10, video=clip, strength=0.5).shape == (10, 256, 256, 3)


def test_v3_live_chunks_read_the_prompt_before_each_chunk_and_never_end_by_themselves(tiny_v3):
    from generator.interface import GenerationRequest

    asked = []

    def prompt_at(index):
        asked.append(index)
        return "a red circle moving left" if index < 2 else "now the red circle moves up"

    chunks = tiny_v3.live_chunks(GenerationRequest(prompt="a red circle moving left", seed=1), prompt_at)
    frames = [next(chunks) for _ in range(5)]
    chunks.close()
    assert [f.shape for f in frames] == [(4, 256, 256, 3)] * 5
    assert asked == [0, 1, 2, 3, 4]


def test_the_chunk_denoiser_attends_to_its_context_and_its_objects(tiny_v3):
    from generator.builtin.causal import object_ids

    model = tiny_v3.pipe.denoiser
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
        noisy = torch.randn(1, 4, 4, 16, 16)
        ids, mask = object_ids([{"colour": "red", "shape": "circle", "direction": "left"}], 3)
        other, _ = object_ids([{"colour": "blue", "shape": "circle", "direction": "left"}], 3)
        context = torch.randn(1, 4, 4, 16, 16)
        given = torch.tensor([[False, False, True, True]])
        base = model(noisy, torch.tensor([0.5]), ids[None], mask[None], context, given)
        assert (model(noisy, torch.tensor([0.5]), other[None], mask[None], context, given) - base).abs().max() > 1e-5
        moved = context.clone()
        moved[:, :, 3] += 1
        assert (model(noisy, torch.tensor([0.5]), ids[None], mask[None], moved, given) - base).abs().max() > 1e-5
        hidden = context.clone()
        hidden[:, :, :2] += 1  # frames marked as not given are not read (a float-noise bound: 0 in exact math)
        assert torch.allclose(model(noisy, torch.tensor([0.5]), ids[None], mask[None], hidden, given), base, atol=1e-6)


def test_a_start_layout_puts_each_object_where_it_starts_and_moves_it_the_asked_way():
    from generator.builtin.causal import ChunkDenoiser, object_ids

    model = ChunkDenoiser(latent_channels=4, dim=32, layers=1, heads=2, start_layout=True)
    with torch.no_grad():
        model.layout_in.weight[0, 0] = 1.0  # channel 0 of each token: how near an object is
    objects = [{"colour": "red", "shape": "circle", "direction": "right"},
               {"colour": "blue", "shape": "square", "direction": "up", "stopped": True}]
    ids, mask = object_ids(objects, 3)
    layout = torch.tensor([[40.0, 24.0, 8.0, 4.0, 4.0, 0.0], [8.0, 56.0, 6.0, 1.5, 0.0, 0.0], [0.0] * 6])
    with torch.no_grad():
        tokens = model.layout_tokens(layout[None], model.colour(ids[None, :, 0]), mask[None].float(), 4)
        nearness = tokens[0, :, 0].view(4, 4, 4)  # frame x token row x token column (16 pixels each)
        only_red = model.layout_tokens(layout[None], model.colour(ids[None, :, 0]),
                                       torch.tensor([[1.0, 0.0, 0.0]]), 4)[0, :, 0].view(4, 4, 4)
    def nearest(frame):
        return divmod(int(only_red[frame].argmax()), 4)

    assert nearest(0) == (1, 2) and nearest(3) == (1, 3)  # x 40 -> 52 px: one token to the right, same row
    blue = nearness - only_red  # stopped at (8, 56): the bottom-left token on every frame
    assert all(int(blue[frame].argmax()) == 3 * 4 + 0 for frame in range(4)) and torch.allclose(blue[0], blue[3])
    assert blue[:, 3, 0].min() > 0.9 and blue[:, :2, 2:].max() < 0.02
    # a denoiser without layouts and one whose layout layers are still zero draw the same
    plain = ChunkDenoiser(latent_channels=4, dim=32, layers=1, heads=2)
    fresh = ChunkDenoiser.grown(plain, start_layout=True)
    assert fresh.config.start_layout and not fresh.layout_in.weight.any()
    noisy = torch.randn(1, 4, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(plain(noisy, torch.tensor([1.0]), ids[None], mask[None]),
                           fresh(noisy, torch.tensor([1.0]), ids[None], mask[None], layout=layout[None]))


def test_layout_pairs_tell_which_shape_is_on_which_side_of_a_token():
    """Two objects equally near one token, mirrored: the linear layout terms sum to the same features
    whichever shape is on which side; with `layout_pairs` the token tells them apart."""
    from generator.builtin.causal import ChunkDenoiser, object_ids

    torch.manual_seed(0)
    square_left = [{"colour": "red", "shape": "square", "direction": "up"},
                   {"colour": "red", "shape": "circle", "direction": "up"}]
    ids, mask = object_ids(square_left, 3)
    swapped, _ = object_ids(square_left[::-1], 3)
    layout = torch.tensor([[16.0, 24.0, 8.0, 0.0, 0.0, 0.0], [32.0, 24.0, 8.0, 0.0, 0.0, 0.0], [0.0] * 6])
    token = 1 * 4 + 1  # the token centred at (24, 24), 8 units from each object
    seen = {}
    for pairs in (False, True):
        model = ChunkDenoiser(latent_channels=4, dim=32, layers=1, heads=2, start_layout=True, layout_pairs=pairs)
        with torch.no_grad():
            for name, value in model.named_parameters():
                if name.startswith("layout_"):
                    value.normal_()
            seen[pairs] = [model.layout_tokens(layout[None], model.shape(which[None, :, 1]), mask[None].float(),
                                               1)[0, token] for which in (ids, swapped)]
    assert torch.allclose(*seen[False], atol=1e-5)
    assert (seen[True][0] - seen[True][1]).abs().max() > 0.1


def test_the_start_layout_comes_from_the_seed_and_keeps_every_path_inside():
    from generator.builtin.backend_v3 import start_bodies

    objects = [{"colour": "red", "shape": "circle", "direction": "left"},
               {"colour": "blue", "shape": "square", "direction": None}]

    def layout(seed):
        return [body.layout() for body in start_bodies(objects, str(seed))]

    assert layout(5) == layout(5) != layout(6)
    for seed in range(50):
        for (x, y, radius, speed, vx, vy), o in zip(layout(seed), objects):
            assert 6 <= radius <= 10 and 1 <= speed <= 1.9
            if o["direction"] == "left":  # 16 frames of the path stay inside the canvas
                assert x - 15 * speed - radius >= 0 and radius <= y <= 64 - radius


def test_objects_start_apart_and_stay_apart_through_the_first_clip():
    """Drawn independently, two objects' 16-frame paths crossed in 7 of 10 starts and blended into one blob;
    three objects are kept apart too, and most objects a steer adds beside two moving ones."""
    from generator.builtin.backend_v3 import closest_gap, follow_steers, scene_objects, start_bodies

    three = scene_objects("a red circle moving left, a blue square and a green triangle going up")
    added_apart = []
    for seed in range(40):
        assert closest_gap(start_bodies(three[:2], str(seed)), 16) >= world.BOUNCE_GAP
        assert closest_gap(start_bodies(three, str(seed)), 16) >= world.BOUNCE_GAP
        bodies = start_bodies(three[:2], str(seed))
        follow_steers(bodies, three[:2], three, f"{seed}:1")
        assert len(bodies) == 3
        added_apart.append(closest_gap(bodies, 16) >= world.BOUNCE_GAP)
    # one added beside two moving ones cannot always keep clear of both (drawn alone: 2 in 40 did)
    assert np.mean(added_apart) >= 0.8
    # the gap of two paths: their centres' distance less 1.3 radii each (side by side going up: 3 pixels)
    one, other = (world.Body(world.ShapeMotion("red", "circle", "up", 8.0, x, 40.0, 1.0)) for x in (20.0, 43.8))
    assert abs(closest_gap([one, other], 16) - 3.0) < 1e-6 and closest_gap([one], 16) == float("inf")


def test_the_scene_layout_moves_as_the_world_does_and_follows_the_steers():
    """A clip made from text keeps its scene as the world moves it: chunk by chunk, the layout is where
    `world.simulate` (what training renders) puts each object, a steer acting at its chunk's first frame; an
    object a steer adds starts where the seed puts it. Only a scene_layout denoiser is given it after the first
    chunk."""
    from generator.builtin.backend_v3 import CausalPipeline, next_chunk, scene_objects, start_bodies
    from generator.builtin.causal import ChunkDenoiser

    chunks = [scene_objects("a red circle moving right")] * 2
    chunks += [scene_objects("now the red circle moves up", chunks[-1])] * 3
    chunks.append(scene_objects("and a blue square moving left", chunks[-1]))
    bodies = start_bodies(chunks[0], "3")
    start = world.ShapeMotion("red", "circle", "right", bodies[0].radius, bodies[0].x, bodies[0].y, bodies[0].speed)
    seen = [bodies[0].layout()[:2]]
    for index in range(1, len(chunks)):
        next_chunk(bodies, chunks[index - 1], chunks[index], 4, f"3:{index}")
        seen.append(bodies[0].layout()[:2])
    path = world.simulate([start], 24, [world.Event(8, 0, "go", "up")])[0]
    assert np.allclose(seen, [path[frame] for frame in range(0, 24, 4)])
    assert bodies[0].vy < 0 and bodies[0].vx == 0  # going up (y grows downwards)
    assert len(bodies) == 2 and bodies[1].vx < 0  # the blue square, moving left
    laid = {}
    for scene in (False, True):
        denoiser = ChunkDenoiser(latent_channels=4, dim=16, layers=1, heads=2, start_layout=True, scene_layout=scene)
        pipe = CausalPipeline(tiny_tokenizer(), denoiser)
        given = []
        forward = denoiser.forward
        denoiser.forward = lambda *a, **k: given.append(a[6] is not None) or forward(*a, **k)
        made = pipe.chunks(lambda i: chunks[min(i, 5)], 1, torch.Generator().manual_seed(0), seed=3)
        for _ in range(3):
            next(made)
        laid[scene] = given
    assert laid == {False: [True, False, False], True: [True, True, True]}


# ------------------------------------------------------------------ training recipes (tiny)
def test_tokenizer_training_resumes_and_can_freeze_the_encoder(tmp_path):
    import json

    from generator.builtin.tokenizer import CausalVideoTokenizer
    from generator.builtin.train_tokenizer import parse_args, train

    tiny = ["--out", str(tmp_path), "--batch", "1", "--frames", "2", "--latent-channels", "4", "--channels", "8", "8",
            "8", "--ckpt-every", "2", "--threads", "1"]
    train(parse_args(tiny + ["--steps", "2"]))
    before = CausalVideoTokenizer.from_pretrained(tmp_path / "tokenizer")
    state = train(parse_args(tiny + ["--steps", "4", "--resume", "--freeze-encoder", "--steepness-weight", "1"]))
    after = CausalVideoTokenizer.from_pretrained(tmp_path / "tokenizer")
    assert state["step"] == 4
    lines = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [line["step"] for line in lines] == [2, 4] and all("psnr" in line for line in lines)
    encoder = [name for name, _ in before.named_parameters() if name.startswith("enc_")]
    decoder = [name for name, _ in before.named_parameters() if name.startswith(("dec_", "head"))]
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    assert all(torch.equal(b[name], a[name]) for name in encoder)
    assert any(not torch.equal(b[name], a[name]) for name in decoder)


def test_the_steepness_term_asks_for_a_steep_edge_near_the_target_one_not_at_its_exact_place():
    from generator.builtin.train_tokenizer import steepness_shortfall

    def edge(at, ramp=1):
        x = torch.arange(32, dtype=torch.float32)
        return ((x - at) / ramp).clamp(0, 1).mul(2).sub(1).expand(1, 3, 32, 32).clone()

    target = edge(16)
    assert steepness_shortfall(target, target) == 0
    # a step one pixel off falls short only at the far rim of the 5-pixel window; a ramp falls short across it
    off, soft = steepness_shortfall(edge(17), target), steepness_shortfall(edge(15, ramp=3), target)
    assert 0 < off < soft / 1.5 and soft > 0.3
    # ringing past black and full brightness, beside the same soft ramp, does not count as a steep edge
    ringing = edge(15, ramp=3)
    ringing[..., 12] -= 1.5
    ringing[..., 20] += 1.5
    assert torch.isclose(steepness_shortfall(ringing, target), soft)
    # a red edge is not made steeper by a sharp step of green beside its soft ramp
    red, soft_red = target.clone(), edge(15, ramp=3)
    red[:, 1:] = soft_red[:, 1:] = -1.0
    fringed = soft_red.clone()
    fringed[:, 1] = edge(16)[:, 1]
    assert torch.isclose(steepness_shortfall(fringed, red), steepness_shortfall(soft_red, red))


def test_chunk_denoiser_training_resumes_and_writes_a_loadable_pipeline(tmp_path):
    from generator.builtin.backend_v3 import BuiltinV3Backend
    from generator.builtin.train_causal import example, parse_args, train
    from generator.interface import GenerationRequest

    rng = random.Random(0)
    for _ in range(200):  # the examples' modes: text-to-video, image-to-video, continuation
        item = example(rng, chunk=4, context=4)
        assert 0 <= item["given"] <= min(4, item["start"]) and 1 <= len(item["objects"]) <= 3
        assert all(event.frame <= item["start"] for event in item["events"])
        assert any(o["steer"] for o in item["objects"]) <= (item["start"] >= 8)
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    args = ["--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "run"), "--batch", "2", "--dim", "16",
            "--layers", "1", "--heads", "2", "--ckpt-every", "1", "--quality-every", "0", "--threads", "1"]
    train(parse_args(args + ["--steps", "1"]))
    assert train(parse_args(args + ["--steps", "2", "--resume"]))["step"] == 2
    backend = BuiltinV3Backend(str(tmp_path / "run" / "pipeline"))
    assert backend.generate(GenerationRequest(prompt="a red circle moving up", num_frames=4)).frames.shape == (
        4, 256, 256, 3)
    # a new run from that pipeline's denoiser (--init-from) starts from its weights (a step at lr 0 keeps them),
    # with start layouts added (--start-layout: their layers start at zero)
    from generator.builtin.causal import ChunkDenoiser

    shipped = ChunkDenoiser.from_pretrained(str(tmp_path / "run" / "pipeline" / "denoiser"))
    train(parse_args(args[:3] + [str(tmp_path / "again"), *args[4:], "--steps", "1", "--lr", "0",
                                 "--init-from", str(tmp_path / "run" / "pipeline"), "--start-layout",
                                 "--context-noise", "0.5", "--layout-pairs"]))
    again = ChunkDenoiser.from_pretrained(str(tmp_path / "again" / "pipeline" / "denoiser"))
    assert not shipped.config.start_layout and again.config.start_layout and again.config.context_noise
    assert again.config.layout_pairs
    kept = again.state_dict()
    assert all(torch.equal(value, kept[name]) for name, value in shipped.state_dict().items())
    # the layers that add to a token start at zero (the pair MLP's hidden layer is random, read by a zero one)
    assert all(not value.any() for name, value in kept.items()
               if name.startswith(("layout_in", "layout_object", "layout_pair.2", "context_level_")))
    again.register_to_config(sample_context_level=0.2)  # sampling noises the context as it was trained
    again.save_pretrained(str(tmp_path / "again" / "pipeline" / "denoiser"))
    backend = BuiltinV3Backend(str(tmp_path / "again" / "pipeline"))  # a start layout, then noised context
    assert backend.generate(GenerationRequest(prompt="a red circle moving up", num_frames=8)).frames.shape == (
        8, 256, 256, 3)
    assert backend.pipe.context_level == 0.2


def test_noised_context_tells_each_example_its_level_and_keeps_missing_frames_empty():
    from generator.builtin.causal import ChunkDenoiser, object_ids
    from generator.builtin.train_causal import noised_context

    torch.manual_seed(0)
    context = torch.rand(400, 2, 4, 4, 4) * 2 - 1
    mask = torch.rand(400, 4) < 0.7
    context = context * mask[:, None, :, None, None]
    noisy, level = noised_context(context, mask, 0.6)
    assert level.min() == 0 and level.max() <= 0.6 and 0.15 < (level == 0).float().mean() < 0.35
    assert torch.equal(noisy[level == 0], context[level == 0])
    assert not noisy.masked_select(~mask[:, None, :, None, None].expand_as(noisy)).any()
    noised = level > 0.3
    assert (noisy[noised] - context[noised]).abs().mean() > 0.2  # the noise is not a rounding error
    # the network reads the level: once its layer is trained, levels change what it draws
    model = ChunkDenoiser.grown(ChunkDenoiser(latent_channels=2, latent_size=4, patch=2, dim=16, layers=1, heads=2),
                                context_noise=True)
    ids, id_mask = object_ids([{"colour": "red", "shape": "circle", "direction": "left"}], 3)
    args = (torch.randn(1, 2, 4, 4, 4), torch.tensor([0.5]), ids[None], id_mask[None], context[:1],
            torch.ones(1, 4, dtype=torch.bool))
    with torch.no_grad():
        assert torch.equal(model(*args, context_level=torch.tensor([0.0])),
                           model(*args, context_level=torch.tensor([0.6])))
        torch.nn.init.normal_(model.context_level_in.weight)
        assert not torch.allclose(model(*args, context_level=torch.tensor([0.0])),
                                  model(*args, context_level=torch.tensor([0.6])), atol=1e-3)


def test_own_context_redraws_the_given_frames_on_the_latent_levels_and_leaves_the_rest():
    from generator.builtin.causal import ChunkDenoiser, object_ids
    from generator.builtin.train_causal import own_context

    torch.manual_seed(0)
    model = ChunkDenoiser(latent_channels=4, dim=32, layers=1, heads=2).train()
    context = torch.rand(3, 4, 4, 16, 16) * 2 - 1
    mask = torch.tensor([[False, False, True, True], [False] * 4, [True] * 4])
    context = context * mask[:, None, :, None, None]
    ids, id_mask = object_ids([{"colour": "red", "shape": "circle", "direction": "left"}], 3)
    out = own_context(model, context, mask, ids.expand(3, -1, -1), id_mask.expand(3, -1), 1.0, levels=5)
    assert model.training and out.shape == context.shape
    assert torch.equal(out[1], context[1])  # no context: nothing to redraw
    for i in (0, 2):
        given = out[i][:, mask[i]]
        assert not torch.equal(given, context[i][:, mask[i]])
        assert torch.allclose(given * 2, torch.round(given * 2))  # on the 5 levels: -1, -0.5, 0, 0.5, 1
    assert not out[0][:, :2].any()  # frames not given stay empty
    assert torch.equal(own_context(model, context, mask, ids.expand(3, -1, -1), id_mask.expand(3, -1), 0.0, 5),
                       context)


def test_the_loss_weighs_the_positions_a_shape_covers():
    from generator.builtin.train_causal import foreground_weights

    target = torch.full((2, 6, 4, 16, 16), -0.5)  # a background latent ...
    target[0, :3, :, 4:7, 4:7] = 1.0  # ... with a shape in the first example only
    weights = foreground_weights(target, 10.0)
    assert weights.shape == (2, 1, 4, 16, 16)
    assert (weights[0, :, :, 4:7, 4:7] == 10.0).all() and weights[0].sum() == 10.0 * 36 + (1024 - 36)
    assert (weights[1] == 1.0).all() and (foreground_weights(target, 1.0) == 1.0).all()


def test_v3_is_a_second_selectable_model_served_by_the_built_in_workers_and_v2_stays_the_default():
    import os

    from generator.builtin.backend_v3 import WEIGHTS_V3
    from generator.interface import DEFAULT_MODEL, GenerationRequest, get_backend, get_info
    from videoservice.bus import models_of_queue, queue_of_model

    assert DEFAULT_MODEL == "builtin"
    assert queue_of_model("builtin-v3") == "builtin" and {"builtin", "builtin-v3"} <= set(models_of_queue("builtin"))
    info = get_info("builtin-v3")
    assert info.supports_video and info.max_steps == 4
    sizes = [os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(os.path.dirname(WEIGHTS_V3))
             for name in names]
    assert sum(sizes) < 40e6  # every built-in model's weights in the repository
    frames = get_backend("builtin-v3").generate(GenerationRequest(prompt="a red circle moving up", num_frames=4,
                                                                  seed=0)).frames
    assert frames.shape == (4, 256, 256, 3)


def test_the_live_driver_uses_v3_natively_and_a_steer_reaches_the_next_chunk(tiny_v3):
    import itertools

    from generator.interface import GenerationRequest
    from generator.live import LiveVideo

    seen = []
    original = tiny_v3.pipe.denoiser.forward

    def spy(noisy, level, objects, *args, **kwargs):
        seen.append(objects[0, 0, 2].item())  # the first object's direction id
        return original(noisy, level, objects, *args, **kwargs)

    tiny_v3.pipe.denoiser.forward = spy
    try:
        live = LiveVideo(tiny_v3, GenerationRequest(prompt="a red circle moving left", seed=2, steps=1),
                         lambda i: "a red circle moving left" if i < 2 else "now the red circle moves up")
        chunks = list(itertools.islice(live, 3))
    finally:
        tiny_v3.pipe.denoiser.forward = original
    from generator.builtin.causal import DIRECTION_IDS

    assert [c.first_frame for c in chunks] == [0, 4, 8] and [len(c.frames) for c in chunks] == [4, 4, 4]
    assert seen == [DIRECTION_IDS["left"], DIRECTION_IDS["left"], DIRECTION_IDS["up"]]
