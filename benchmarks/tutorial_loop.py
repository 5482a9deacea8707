"""The reference: PyTorch's "Training a Classifier" loop as the tutorials publish it, on the real data.

Per-image PIL decode and transforms (ToTensor, Normalize 0.5/0.5), DataLoader(batch_size=4, shuffle=True,
num_workers=2), SGD lr 0.001 momentum 0.9, 2 epochs, then accuracy on the test set. CIFAR-10 uses the tutorial's
LeNet on an image-folder copy (torchvision's ImageFolder); MNIST the notebook's MLP 784-120-256-10.

python benchmarks/tutorial_loop.py cifar10|mnist DATA_DIR [--seed N]   prints one JSON line.
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torchvision
import torchvision.transforms as transforms


class Net(nn.Module):  # the CIFAR-10 tutorial's network, verbatim
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)  # flatten all dimensions except batch
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


class MnistNet(nn.Module):  # the MNIST notebook's network, verbatim
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 120)
        self.fc2 = nn.Linear(120, 256)
        self.fc3 = nn.Linear(256, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["cifar10", "mnist"])
    parser.add_argument("data_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    if args.dataset == "cifar10":
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
        trainset = torchvision.datasets.ImageFolder(f"{args.data_dir}/cifar10-jpeg/train", transform=transform)
        testset = torchvision.datasets.ImageFolder(f"{args.data_dir}/cifar10-jpeg/test", transform=transform)
        net = Net()
    else:
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
        trainset = torchvision.datasets.MNIST(root=args.data_dir, train=True, download=False, transform=transform)
        testset = torchvision.datasets.MNIST(root=args.data_dir, train=False, download=False, transform=transform)
        net = MnistNet()
    batch_size = 4
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=batch_size, shuffle=True, num_workers=2)
    testloader = torch.utils.data.DataLoader(testset, batch_size=batch_size, shuffle=False, num_workers=2)

    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

    curve = []  # (training seconds, test accuracy) after each epoch, for the time-to-accuracy plot
    train_seconds = 0.0
    for epoch in range(2):  # loop over the dataset multiple times
        start = time.perf_counter()
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            inputs, labels = data
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            if i % 2000 == 1999:  # print every 2000 mini-batches
                print(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / 2000:.3f}", flush=True)
                running_loss = 0.0
        train_seconds += time.perf_counter() - start
        curve.append((train_seconds, evaluate(net, testloader)))

    print(json.dumps({"dataset": args.dataset, "train_seconds": train_seconds, "images": 2 * len(trainset),
                      "images_per_second": 2 * len(trainset) / train_seconds, "test_acc": curve[-1][1],
                      "curve": curve}))


def evaluate(net: nn.Module, testloader) -> float:
    correct = 0
    total = 0
    with torch.no_grad():  # since we're not training, we don't need to calculate the gradients
        for images, labels in testloader:
            outputs = net(images)
            _, predicted = torch.max(outputs, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    return correct / total


if __name__ == "__main__":
    main()
