"""The faces a train.py run learns from and validates on, and what its model records of them.

The course's training rows are split by person (split_rows): the validation people are held out
whole, so that validation measures new faces, and the unseen people (splits/unseen_people.txt)
stay out unless --unseen. The two-head network (models.TwoHeadNet) also trains on the in-the-wild
set (media.wild_dir()): every face but those of the validation photos (media.wild_val_photos()),
which validate its 300-W head, and those of the LFW photos of the course people the run holds out,
who would otherwise be seen in training after all (build_wild_datasets). Its model then records
the faces it trained on by source (trained_on) and the terms of their photos (data_terms).
"""

import os

import numpy as np
from torch.utils.data import ConcatDataset

import models
from data_load import CachedFaceDataset, photo_options
from facial_keypoints import media

# --photo-augment's groups of data_load.PHOTO_GROUPS, the shipped recipe's: not lighting, the
# harshest, nor occlusion, which no test measures (docs/EXPERIMENTS.md, output heads).
PHOTO_GROUPS_USED = ("lowres", "blur", "noise", "jpeg")
# What a model trained on the in-the-wild set may be used for: the terms of its photos and labels
# (300-W's; LFW's photos; dlib's model, which labelled them, shares 300-W's terms).
NON_COMMERCIAL = "research and non-commercial use only"


def split_by_person(csv_file, val_fraction, seed, limit=0, exclude=()):
    """Training and validation rows: whole people held out (new faces); those in `exclude` in neither."""
    names = list(media.read_keypoints_csv(csv_file).iloc[:, 0])[:limit or None]
    people = sorted({media.identity_of(n) for n in names} - set(exclude))
    rng = np.random.default_rng(seed)
    held_out = set(rng.choice(people, size=int(round(len(people) * val_fraction)), replace=False))
    train = [i for i, n in enumerate(names) if media.identity_of(n) not in held_out | set(exclude)]
    val = [i for i, n in enumerate(names) if media.identity_of(n) in held_out]
    return train, val


def course_csv(args):
    """The course's training CSV in the run's --data folder."""
    return os.path.join(args.data, "training_frames_keypoints.csv")


def left_out_people(args):
    """The course people a run neither trains nor validates on: the unseen people, unless --unseen."""
    return set() if args.unseen else media.unseen_people()


def split_rows(args):
    """The run's (training, validation) rows of the training CSV; Notebook 2's datasets use them too."""
    return split_by_person(course_csv(args), args.val_fraction, args.seed, args.limit, left_out_people(args))


def two_heads(arch):
    """Whether `arch` is the two-head network (models.TwoHeadNet), which trains on the wild set too."""
    return arch in models.TWO_HEAD_ARCHS


def face_sets(args, csv_file, images, rows, convention=None, progress=False):
    """The (training, validation) sets of the (training, validation) `rows` of a labelled CSV: the
    training set augmented as the run's options say, its samples carrying `convention` (an index
    of models.CONVENTIONS) where given; the validation set None when it has no rows."""
    train_idx, val_idx = rows
    train_set = CachedFaceDataset(csv_file, images, args.input_size, train=args.augment, indices=train_idx,
                                  progress=progress, rotation=args.rotation, convention=convention,
                                  **photo_options(args.photo_augment, PHOTO_GROUPS_USED))
    val_set = CachedFaceDataset(csv_file, images, args.input_size, train=False, indices=val_idx,
                                progress=progress) if val_idx else None
    return train_set, val_set


def build_datasets(args, progress=False):
    """The course's (training, validation) sets; for the two-head network the training samples
    carry their convention, the course's (models.CONVENTIONS index 0)."""
    convention = models.CONVENTIONS.index("course") if two_heads(args.arch) else None
    return face_sets(args, course_csv(args), os.path.join(args.data, "training"), split_rows(args),
                     convention, progress)


def existing_wild_csv():
    """The in-the-wild set's CSV (media.wild_csv()), or a DataError saying where it was looked for."""
    csv_file = media.wild_csv()
    if not os.path.isfile(csv_file):
        raise media.DataError(f"the two-head network trains on the in-the-wild set too, and there is none "
                              f"at {os.path.abspath(media.wild_dir())} (set FKP_WILD, or import one with "
                              f"get_data.py --pts DIR --source NAME)")
    return csv_file


def wild_person(name):
    """Who a wild face is, as far as its name says: LFW names its photos after the person as the
    course does (`lfw-Aaron_Eckhart_0001_0.jpg`: Aaron_Eckhart); 300-W's names are numbers."""
    name = os.path.basename(name)
    source = media.wild_source(name)
    return media.identity_of(media.identity_of(name[len(source) + 1:] if source else name))


def wild_rows(csv_file, limit=0, exclude=()):
    """The wild set's (training, validation) rows: the faces of the photos of media.wild_val_photos()
    validate; every other face trains, but those of the people in `exclude` (course people whom
    the run holds out, in other photos); `limit`: the first rows only."""
    names = list(media.read_keypoints_csv(csv_file).iloc[:, 0])[:limit or None]
    held_out = media.in_wild_val_photos(names)
    train = [i for i, name in enumerate(names) if not held_out[i] and wild_person(name) not in exclude]
    val = [i for i in range(len(names)) if held_out[i]]
    return train, val


def build_wild_datasets(args, progress=False):
    """The wild set's (training, validation) sets, augmented as the course's; the training samples
    carry the 300-W convention (models.CONVENTIONS index 1). The validation set is None when empty."""
    csv_file = existing_wild_csv()
    # The course people the run holds out (its validation people; the unseen people unless
    # --unseen) stay out in their LFW photos too.
    course_names = list(media.read_keypoints_csv(course_csv(args)).iloc[:, 0])
    exclude = {media.identity_of(course_names[i]) for i in split_rows(args)[1]} | left_out_people(args)
    return face_sets(args, csv_file, media.wild_images(), wild_rows(csv_file, args.limit, exclude),
                     models.CONVENTIONS.index("300w"), progress)


def trained_on(train_set):
    """The training faces by source: `course` for the course's frames, else the in-the-wild set's
    sources, the start of their names (media.wild_source: lfpw, helen, afw; lfw: faces
    pseudo_label.py labelled; `other` for a face whose name names no source)."""
    counts = {}
    for part in train_set.datasets if isinstance(train_set, ConcatDataset) else [train_set]:
        wild = getattr(part, "convention", None) == models.CONVENTIONS.index("300w")
        for name in part.names:
            source = (media.wild_source(name) or "other") if wild else "course"
            counts[source] = counts.get(source, 0) + 1
    return counts


def data_terms(sources):
    """The terms of the in-the-wild photos a model trained on (trained_on's sources)."""
    sets = "300-W and LFW" if "lfw" in sources else "300-W"
    return f"{sets}: {NON_COMMERCIAL}"
